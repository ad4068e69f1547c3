"""llama.cpp per CPU (export/llama_build.py) and its self-test (export/llm.py)."""

from __future__ import annotations

from pathlib import Path

from export.llama_build import Tier, tiers
from export.llm import gguf_path, self_test

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi1 bmi2 avx2"
AVX512 = "avx512f avx512cd avx512vl avx512dq avx512bw avx512vbmi avx512_vnni"
# A Sapphire Rapids guest as /proc/cpuinfo shows it: AMX tiles among its flags.
AMX = f"{BASE} {AVX512} avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni"


def _flags(text: str) -> set[str]:
    return set(text.split())


def test_an_amx_cpu_gets_every_extension_but_amx_then_smaller_tiers() -> None:
    first, avx2, plain = tiers(_flags(AMX))
    assert first.name == (
        "sse42-avx-avx2-bmi2-fma-f16c-avxvnni-avx512-avx512vbmi-avx512vnni-avx512bf16"
    )
    args = first.cmake_args().split()
    assert "-DGGML_NATIVE=OFF" in args  # no -march=native: it would turn AMX on
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(args)
    assert not any("AMX" in a and a.endswith("=ON") for a in args)
    assert "-DGGML_AVX512_BF16=ON" in args
    assert avx2.name == "sse42-avx-avx2-bmi2-fma-f16c"
    assert plain == Tier(()) and plain.name == "x86-64"


def test_an_avx2_only_cpu_builds_no_avx512_and_its_folder_differs() -> None:
    found = tiers(_flags(BASE))
    assert [t.name for t in found] == ["sse42-avx-avx2-bmi2-fma-f16c", "x86-64"]
    assert "-DGGML_AVX512=OFF" in found[0].cmake_args().split()
    assert found[0].name != tiers(_flags(AMX))[0].name  # a wheel from the AMX box is not found


def test_avx512_extensions_need_the_avx512_foundation() -> None:
    # VNNI reported without the AVX-512 foundation set (a masked guest): neither is built.
    (first, *_) = tiers(_flags(f"{BASE} avx512_vnni avx512f"))
    assert "avx512" not in first.name


def test_the_self_test_generates_with_the_installed_llama_cpp() -> None:
    assert self_test(gguf_path("smollm2", Path("."))) is None


def test_the_self_test_reports_a_child_killed_by_a_signal(tmp_path: Path) -> None:
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'ggml_backend_amx_mul_mat' >&2\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    failure = self_test(gguf_path("smollm2", Path(".")), python=str(crashing))
    assert failure is not None and failure.crashed
    assert "SIGSEGV" in str(failure) and "ggml_backend_amx_mul_mat" in str(failure)


def test_a_self_test_that_cannot_import_llama_cpp_is_no_crash(tmp_path: Path) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: diskcache' >&2\nexit 1\n")
    broken.chmod(0o755)
    failure = self_test(gguf_path("smollm2", Path(".")), python=str(broken))
    assert failure is not None and not failure.crashed  # no smaller build is tried for this
    assert "diskcache" in str(failure)


def test_the_installed_llama_cpp_holds_no_amx_instruction() -> None:
    """The build setup installed: AVX-512/VNNI code where this CPU has it, AMX tiles never
    (their kernel faulted on its first token under KVM)."""
    import shutil
    import subprocess

    import llama_cpp

    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils) is missing; the llama.cpp build needs binutils too"
    lib = Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"
    text = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    amx = ("ldtilecfg", "tileloadd", "tdpbssd", "tdpbf16ps", "tilerelease", "tilestored")
    assert [m for m in amx if m in text] == []
    assert "vfmadd" in text  # the file really is the CPU backend's code
