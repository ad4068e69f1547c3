"""The `llm` model's two engines on the packaged GGUF (model_repository/backend/llm_engine.py,
loaded from its file as Triton loads it), and how publish-llm chooses between them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from export.llm import (
    CHECK,
    ENGINES,
    MAX_REGRET,
    Trial,
    choose,
    gguf_path,
    judge,
    save_openvino_ir,
    self_test,
    served_engine,
    this_cpu,
    try_engine,
    why_not,
)
from export.repository import link_or_copy
from orchestrator.clients.chat_template import GGUFTokenizer
from orchestrator.settings import ROOT

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)


def _module() -> ModuleType:
    path = ROOT / "model_repository" / "backend" / "llm_engine.py"
    spec = importlib.util.spec_from_file_location("llm_engine", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    loaded = _module().load(request.param, gguf_path("smollm2", Path(".")), {"n_ctx": "1024"})
    yield loaded
    loaded.close()


def _run(engine: Any, sampling: dict[str, Any], keep: int | None = None) -> tuple[str, int]:
    pieces: list[str] = []

    def on_piece(text: str) -> bool:
        pieces.append(text)
        return keep is None or len(pieces) < keep

    produced = engine.generate(PROMPT, sampling, on_piece)
    return "".join(pieces), produced


def test_each_engine_answers_greedily_and_counts_its_tokens(engine: Any) -> None:
    text, produced = _run(engine, {"max_tokens": 24, "temperature": 0})
    assert text.strip() and 1 <= produced <= 24
    assert engine.count(PROMPT) == 27  # the same tokens whichever engine reads them
    assert engine.n_ctx == 1024


def test_each_engine_keeps_to_the_token_budget_and_stop_strings(engine: Any) -> None:
    text, produced = _run(engine, {"max_tokens": 3, "temperature": 0})
    assert produced == 3 and text.strip()
    whole, _ = _run(engine, {"max_tokens": 24, "temperature": 0})
    stop = whole.split()[2]  # the answer's third word
    text, _ = _run(engine, {"max_tokens": 24, "temperature": 0, "stop": [stop]})
    # Cut before the stop string (OpenVINO also drops the space its token starts with).
    assert whole.startswith(text) and text.strip() == whole[: whole.index(stop)].strip()


def test_each_engine_stops_when_told_to(engine: Any) -> None:
    whole, all_tokens = _run(engine, {"max_tokens": 24, "temperature": 0})
    text, produced = _run(engine, {"max_tokens": 24, "temperature": 0}, keep=2)
    assert produced < all_tokens and len(text) < len(whole)


def test_each_engine_samples_with_a_seed(engine: Any) -> None:
    sampling = {"max_tokens": 12, "temperature": 0.9, "seed": 7}
    assert _run(engine, sampling) == _run(engine, sampling)  # same seed, same answer


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown LLM engine 'vllm'"):
        _module().load("vllm", Path("model.gguf"), {})


def test_the_version_folder_names_the_engine_and_the_cpu_it_was_tried_on(tmp_path: Path) -> None:
    assert served_engine(tmp_path) == ("llama.cpp", False)  # published before the choice
    (tmp_path / "engine.json").write_text(json.dumps({"engine": "openvino", "cpu": "other"}))
    assert served_engine(tmp_path) == ("openvino", False)  # tried on another CPU: test again
    (tmp_path / "engine.json").write_text(json.dumps({"engine": "openvino", "cpu": this_cpu()}))
    assert served_engine(tmp_path) == ("openvino", True)


def test_llama_cpp_answering_differently_in_batches_is_a_native_failure(tmp_path: Path) -> None:
    # What the trial child prints when one-token reading disagrees with batched reading.
    measured = {"first_token_s": 1.0, "rss_mb": 200, "consistency": ["La femme", "The capital"]}
    child = tmp_path / "python"
    child.write_text(f"#!/bin/sh\necho '{json.dumps(measured)}'\n")
    child.chmod(0o755)
    trial = try_engine("llama.cpp", Path("m.gguf"), {}, ["p"], python=str(child), check="q")
    assert trial.crashed and "answers differently reading a prompt in batches" in str(trial)
    assert choose([trial, Trial("openvino", 2.0, 300)], "auto").engine == "openvino"
    measured["consistency"] = ["The capital", "The capital"]
    child.write_text(f"#!/bin/sh\necho '{json.dumps(measured)}'\n")
    assert try_engine("llama.cpp", Path("m.gguf"), {}, ["p"], python=str(child)).failure is None


def test_openvino_loads_the_ir_published_beside_the_gguf(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    link_or_copy(gguf_path("smollm2", Path(".")), gguf)
    save_openvino_ir(gguf)
    greedy = {"max_tokens": 24, "temperature": 0}
    converted = _module().load("openvino", gguf, {"n_ctx": "1024"})
    answer = _run(converted, greedy)
    assert converted.source == tmp_path  # the saved IR, not the GGUF converted again
    converted.close()
    (tmp_path / "openvino_model.xml").unlink()
    again = _module().load("openvino", gguf, {"n_ctx": "1024"})
    assert again.source == gguf and _run(again, greedy) == answer  # the same model
    again.close()


def test_the_openvino_self_test_generates_on_this_cpu() -> None:
    assert self_test(gguf_path("smollm2", Path(".")), engine="openvino") is None


LLAMA = Trial("llama.cpp", first_token_s=1.0, rss_mb=200)


def test_auto_keeps_llama_cpp_unless_openvino_answers_first_by_the_margin() -> None:
    assert choose([LLAMA, Trial("openvino", 0.9, 300, regret=0.0)], "auto").engine == "llama.cpp"
    assert choose([LLAMA, Trial("openvino", 0.5, 300, regret=0.0)], "auto").engine == "openvino"


def test_auto_keeps_llama_cpp_where_openvino_computes_another_model() -> None:
    unfaithful = Trial("openvino", 0.5, 300, regret=MAX_REGRET + 0.01)
    assert choose([LLAMA, unfaithful], "auto") == LLAMA
    assert "nats per token under llama.cpp" in str(why_not(unfaithful, LLAMA))
    unscored = Trial("openvino", 0.5, 300)  # the judge failed: nothing says it is the model
    assert choose([LLAMA, unscored], "auto") == LLAMA
    assert "could not be scored" in str(why_not(unscored, LLAMA))
    assert why_not(Trial("openvino", 0.9, 300), LLAMA) is None  # not first by the margin
    assert choose([LLAMA, unfaithful], "openvino") == unfaithful  # asked for by name


def test_llama_cpp_scores_answers_by_how_unlikely_their_tokens_are_to_it() -> None:
    gguf = gguf_path("smollm2", Path("."))
    asked = GGUFTokenizer(gguf).render(CHECK)
    params = {"n_ctx": "512", "n_batch": "512"}
    tried = try_engine("llama.cpp", gguf, params, [asked])
    assert tried.answers and tried.answers[0].startswith("The capital of France")
    own = judge(gguf, params, [asked], tried)
    assert own.regret is not None and own.regret < 0.01  # llama.cpp's own greedy answer
    other = judge(gguf, params, [asked], Trial("openvino", 1.0, answers=("Zebra purple",)))
    assert other.regret is not None and other.regret > 1.0
    silent = judge(gguf, params, [asked], Trial("openvino", 1.0, answers=("",)))
    assert silent.regret is None  # nothing to score: not taken for the same model


def test_auto_serves_whichever_engine_works() -> None:
    crashed = Trial("llama.cpp", failure="llama.cpp died with SIGILL", crashed=True)
    assert choose([crashed, Trial("openvino", 2.0, 300)], "auto").engine == "openvino"
    broken = Trial("openvino", failure="the openvino trial exited with 1")
    assert choose([LLAMA, broken], "auto") == LLAMA
    with pytest.raises(SystemExit, match="no LLM engine runs the model on this CPU"):
        choose([crashed, broken], "auto")


def test_an_engine_asked_for_must_work() -> None:
    broken = Trial("openvino", failure="the openvino trial exited with 1")
    assert choose([LLAMA], "llama.cpp") == LLAMA
    with pytest.raises(SystemExit, match="openvino cannot run the model on this CPU"):
        choose([broken], "openvino")
