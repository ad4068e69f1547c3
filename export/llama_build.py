"""llama-cpp-python built for this CPU's instruction sets, never with AMX tiles, proven to run.

A native build (`-march=native`) turns on every extension the compiler sees, AMX included,
and llama.cpp's AMX kernels faulted (`ldtilecfg`, SIGSEGV) on the first token under a
hypervisor. So the build names its extensions explicitly from /proc/cpuinfo, leaves AMX off,
and keeps the wheel in a folder named after those extensions: a wheel built elsewhere is used
only on a CPU with the same extensions, and only after a one-token generation in a child
process works here. If that self-test dies, the next, smaller tier is built (AVX2, then plain
x86-64). `make setup` runs `python -m export.llama_build`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from export.llm import gguf_path, self_test

VERSION = "0.3.36"
PACKAGE = f"llama-cpp-python=={VERSION}"
WHEELS = Path.home() / ".cache" / "tritonrag" / "wheels"
AVX512 = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
# ggml's CMake option -> its short name and the /proc/cpuinfo flags it needs.
OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "GGML_SSE42": ("sse42", ("sse4_2",)),
    "GGML_AVX": ("avx", ("avx",)),
    "GGML_AVX2": ("avx2", ("avx2",)),
    "GGML_BMI2": ("bmi2", ("bmi2",)),
    "GGML_FMA": ("fma", ("fma",)),
    "GGML_F16C": ("f16c", ("f16c",)),
    "GGML_AVX_VNNI": ("avxvnni", ("avx_vnni",)),
    "GGML_AVX512": ("avx512", AVX512),
    "GGML_AVX512_VBMI": ("avx512vbmi", (*AVX512, "avx512vbmi")),
    "GGML_AVX512_VNNI": ("avx512vnni", (*AVX512, "avx512_vnni")),
    "GGML_AVX512_BF16": ("avx512bf16", (*AVX512, "avx512_bf16")),
}
AVX2_TIER = ("GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_BMI2", "GGML_FMA", "GGML_F16C")
NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


@dataclass(frozen=True)
class Tier:
    """One set of instruction-set options; its name is the cache folder's."""

    options: tuple[str, ...]

    @property
    def name(self) -> str:
        return "-".join(OPTIONS[o][0] for o in self.options) or "x86-64"

    def cmake_args(self) -> str:
        flags = [f"-D{o}={'ON' if o in self.options else 'OFF'}" for o in OPTIONS]
        flags += [f"-D{o}=OFF" for o in NEVER]
        return " ".join(["-DGGML_NATIVE=OFF", *flags, "-DLLAVA_BUILD=OFF"])


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def tiers(flags: set[str]) -> list[Tier]:
    """Every option this CPU has, then the AVX2 set, then none; duplicates dropped."""
    have = tuple(o for o, (_, needs) in OPTIONS.items() if set(needs) <= flags)
    result: list[Tier] = []
    for tier in (Tier(have), Tier(tuple(o for o in have if o in AVX2_TIER)), Tier(())):
        if tier not in result:
            result.append(tier)
    return result


def cached_wheel(folder: Path) -> Path | None:
    return next(iter(sorted(folder.glob("llama_cpp_python-*.whl"))), None)


def build(tier: Tier, folder: Path, python: str) -> Path:
    """pip builds the wheel with this tier's options into `folder` (~6 min on 2 cores)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=tier.cmake_args())
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    print(f"llama.cpp: building {PACKAGE} for {tier.name} (a few minutes, once per CPU kind)")
    subprocess.run(
        [python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
         "--no-cache-dir", "-w", str(folder), PACKAGE],
        env=env, check=True,
    )  # fmt: skip
    wheel = cached_wheel(folder)
    if wheel is None:
        raise SystemExit(f"pip wheel left no wheel in {folder}")
    record = {"package": PACKAGE, "tier": tier.name, "cmake_args": tier.cmake_args()}
    record |= {"built_on": cpu_model(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return wheel


def install(wheel: Path, python: str) -> None:
    """This wheel in place of any other build of the same version, then what it needs."""
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel)], check=True)
    subprocess.run([*pip, str(wheel)], check=True)


def ensure(wheels: Path, gguf: Path, python: str) -> Tier:
    """Install the first tier whose wheel generates a token here; the tier it chose."""
    flags = cpu_flags()
    if "amx_tile" in flags:
        print("llama.cpp: this CPU has AMX tiles; they stay off (they faulted under KVM)")
    for tier in tiers(flags):
        folder = wheels / f"llama-cpp-python-{VERSION}" / tier.name
        wheel = cached_wheel(folder) or build(tier, folder, python)
        install(wheel, python)
        failure = self_test(gguf, python)
        if failure is None:
            print(f"llama.cpp: {wheel.name} ({tier.name}) generates on this CPU")
            return tier
        if not failure.crashed:  # an install or model problem: another build would not help
            raise SystemExit(f"llama.cpp: the self-test failed: {failure}")
        print(f"llama.cpp: the {tier.name} build crashed here ({failure}); trying a smaller one")
    raise SystemExit("llama.cpp: no build of llama-cpp-python generates on this CPU")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="wheel cache folder")
    parser.add_argument("--gguf", default="smollm2", help="model for the self-test")
    args = parser.parse_args()
    ensure(args.wheels, gguf_path(args.gguf, Path(".models")), sys.executable)


if __name__ == "__main__":
    main()
