"""Known-harmless chatter of the export libraries, silenced where it is said and nowhere else.

Each entry names the logger and the start of the message; everything else they say (errors
included) still shows. `make demo` printed ~45 of these before anything useful.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

# (logger name, message prefix): why it is harmless here.
HARMLESS = (
    # onnxruntime.quantization: our graphs come straight from optimum; the pre-processing it
    # suggests (shape inference, optimisation) is what the "optimized" scheme measures.
    ("root", "Please consider to run pre-processing before quantization"),
    # ORT's transformer optimizer cannot run symbolic shape inference on this graph; the
    # fusions that need it are skipped, which the scheme's own timing already reflects.
    ("fusion_skiplayernorm", "symbolic shape inference disabled"),  # ORT puts its dir on sys.path
    # optimum: the tied-weight check needs accelerate; MiniLM ties no weights.
    ("optimum.exporters.onnx.base", "Weight deduplication check in the ONNX export"),
    # transformers, called by optimum with the old argument name.
    ("transformers.configuration_utils", "`torch_dtype` is deprecated"),
    ("transformers.modeling_utils", "`torch_dtype` is deprecated"),
)


# torch's TracerWarnings on the export: shapes and a mask check folded into constants, as
# expected for one fixed architecture (the parity gate checks the graph against the model).
TRACER = (
    r"torch\.tensor results are registered as constants in the trace",
    r"Converting a tensor to a Python boolean might cause the trace to be incorrect",
)


class _Drop(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Drop the HARMLESS messages and the TRACER warnings while the block runs."""
    installed = []
    for name, prefix in HARMLESS:
        logger = logging.getLogger() if name == "root" else logging.getLogger(name)
        drop = _Drop(prefix)
        logger.addFilter(drop)
        installed.append((logger, drop))
    try:
        with warnings.catch_warnings():
            for message in TRACER:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, drop in installed:
            logger.removeFilter(drop)
