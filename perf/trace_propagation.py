"""Does Triton join the caller's trace? Triton alone, OpenTelemetry mode, REQUESTS embedding
calls over gRPC, each with its own W3C `traceparent`: how many of Triton's request spans carry
the caller's trace id.

    python -m perf.trace_propagation      (REQUESTS=200 by default)
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from orchestrator.cli.tritonserver import TritonProcess, free_port
from orchestrator.settings import PORT_FIELDS, Settings
from perf.otlp import receiver


def main() -> None:
    requests = int(os.environ.get("REQUESTS", "200"))
    with receiver() as collector, tempfile.TemporaryDirectory() as runtime:
        values: dict[str, Any] = {port: free_port() for port in PORT_FIELDS}
        values |= {"runtime_dir": Path(runtime), "otlp_endpoint": collector.url}
        settings = Settings(**values)
        sent: list[str] = []
        with TritonProcess.start(settings) as triton:
            triton.wait_ready()
            client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
            for i in range(requests):
                trace_id = secrets.token_hex(16)
                sent.append(trace_id)
                text = grpcclient.InferInput("text", [1, 1], "BYTES")
                text.set_data_from_numpy(np.array([[f"text {i}".encode()]], dtype=np.object_))
                parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
                client.infer(settings.embed_model, [text], headers={"traceparent": parent})
            time.sleep(8)  # Triton exports its spans in batches
        with collector.lock:
            traced = {s.trace_id for s in collector.spans if s.name == "InferRequest"}
        joined = len(traced & set(sent))
        print(
            f"{requests} requests, {len(traced)} Triton request spans, {joined} in the caller's "
            f"trace ({100 * joined / requests:.1f} %)"
        )


if __name__ == "__main__":
    main()
