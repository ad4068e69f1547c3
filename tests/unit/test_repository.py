from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export import tensorrt
from orchestrator.cli.tritonserver import startup_models
from orchestrator.settings import Settings

REPO = Path(__file__).resolve().parents[2] / "model_repository"


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("path", sorted(REPO.glob("*/*/config.pbtxt")), ids=str)
def test_committed_configs_parse_and_match_their_folder(path: Path) -> None:
    config = _config(path)
    assert config.name == path.parent.name
    # The LLM is decoupled and batches nothing itself (as Triton's vLLM backend wants it).
    assert config.max_batch_size == (0 if config.name == "llm" else 64)
    if config.platform != "ensemble":  # an ensemble has no versions of its own to pick
        assert config.version_policy.WhichOneof("policy_choice") == "specific"


@pytest.mark.parametrize("model", ["embed", "embed_fp32", "embed_int8"])
def test_cpu_models_batch_with_two_priorities_and_bounded_queues(model: str) -> None:
    config = _config(REPO / "cpu" / model / "config.pbtxt")
    batching = config.dynamic_batching
    assert config.backend == "python"
    assert [g.count for g in config.instance_group] == [2]
    assert batching.priority_levels == 2 and batching.default_priority_level == 2
    assert batching.default_queue_policy.max_queue_size > 0
    assert batching.priority_queue_policy[1].max_queue_size > 0
    assert [w.name for w in config.model_warmup] == ["one_text"]
    assert [o.name for o in config.output] == ["embedding", "token_count", "variant"]
    assert not config.response_cache.enable  # see the comment in config.pbtxt


def test_gpu_encoders_run_two_instances_on_the_gpu() -> None:
    for name in ("encoder_trt", "encoder_onnx"):
        config = _config(REPO / "gpu" / name / "config.pbtxt")
        assert [(g.count, g.kind) for g in config.instance_group] == [
            (2, model_config_pb2.ModelInstanceGroup.KIND_GPU)
        ]


def test_tensorrt_without_a_gpu_refuses_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tensorrt, "gpu_present", lambda: False)
    with pytest.raises(SystemExit) as info:
        tensorrt.build_plan(tmp_path / "m.onnx", tmp_path / "m.plan", 64, 256)
    assert "needs an NVIDIA GPU" in str(info.value.code)
    assert not (tmp_path / "m.plan").exists()


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_llm_speaks_the_tensor_names_of_tritons_llm_backends(target: str) -> None:
    config = _config(REPO / target / "llm" / "config.pbtxt")
    assert config.model_transaction_policy.decoupled
    names = {i.name for i in config.input}
    assert {"text_input", "stream", "sampling_parameters", "exclude_input_in_output"} <= names
    assert "text_output" in {o.name for o in config.output}


def test_triton_starts_with_the_served_models_only_unless_told(tmp_path: Path) -> None:
    for model in ("embed", "embed_fp32", "embed_int8", "llm"):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "1" / "model.py").write_text("")
    settings = Settings(model_repository=tmp_path)
    assert startup_models(settings) == ["embed", "llm"]
    assert startup_models(settings.model_copy(update={"llm_backend": "openai"})) == ["embed"]
    everything = settings.model_copy(update={"triton_load_all": True})
    assert startup_models(everything) == ["embed", "embed_fp32", "embed_int8", "llm"]
