"""How faithfully each LLM engine computes the packaged GGUF. The next token's log-probabilities
after publish-llm's trial prompts, from llama.cpp and from OpenVINO GenAI's IR, are compared
with a float64 forward pass of the dequantized GGUF in numpy: the model as the file defines
it. Each engine's greedy answers are then scored as publish-llm scores them
(`export.llm.judge`, llama.cpp as the judge).

    python -m perf.llm_fidelity     # writes perf/results/llm_fidelity.{json,md}

The reference reads the llama architecture only (SmolLM2, the default model).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from export.llm import (
    MAX_REGRET,
    config_params,
    gguf_path,
    judge,
    save_openvino_ir,
    trial_prompts,
    try_engine,
)
from export.repository import link_or_copy
from export.run import cpu_isa
from orchestrator.settings import Settings
from perf.common import save_results

Array = npt.NDArray[np.float64]
TOP = 10  # the reference's most likely next tokens, where the engines are compared


class Reference:
    """The GGUF's llama model in float64: weights dequantized by gguf-py, llama.cpp's RoPE
    (adjacent pairs, as the GGUF stores Q and K), grouped-query attention, SwiGLU."""

    def __init__(self, path: Path) -> None:
        import gguf
        from gguf.quants import dequantize

        reader = gguf.GGUFReader(path)
        if self._field(reader, "general.architecture") != "llama":
            raise SystemExit("the reference reads the llama architecture only")
        self.w = {
            t.name: dequantize(t.data, t.tensor_type)
            .astype(np.float64)
            .reshape([int(n) for n in reversed(t.shape)])
            for t in reader.tensors
        }
        self.eps = float(self._field(reader, "llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(self._field(reader, "llama.rope.freq_base"))
        self.heads = int(self._field(reader, "llama.attention.head_count"))
        self.kv_heads = int(self._field(reader, "llama.attention.head_count_kv"))
        self.layers = int(self._field(reader, "llama.block_count"))

    @staticmethod
    def _field(reader: Any, key: str) -> Any:
        field = reader.fields[key]
        value = field.parts[field.data[0]]
        return bytes(value).decode() if value.dtype == np.uint8 else value.tolist()[0]

    def _norm(self, x: Array, weight: Array) -> Array:
        scaled: Array = x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * weight
        return scaled

    def _rope(self, x: Array) -> Array:
        dim = x.shape[-1]
        angle = np.arange(x.shape[0])[:, None] * self.theta ** (-np.arange(0, dim, 2) / dim)
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
        return out

    def next_logprobs(self, ids: list[int]) -> Array:
        w, n = self.w, len(ids)
        x = w["token_embd.weight"][ids]
        dim = x.shape[1] // self.heads
        group = self.heads // self.kv_heads
        mask = np.triu(np.full((n, n), -np.inf), 1)
        for i in range(self.layers):
            b = f"blk.{i}."
            h = self._norm(x, w[b + "attn_norm.weight"])
            q = self._rope((h @ w[b + "attn_q.weight"].T).reshape(n, self.heads, dim))
            k = self._rope((h @ w[b + "attn_k.weight"].T).reshape(n, self.kv_heads, dim))
            v = (h @ w[b + "attn_v.weight"].T).reshape(n, self.kv_heads, dim)
            k, v = np.repeat(k, group, 1), np.repeat(v, group, 1)
            scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(dim) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = np.einsum("hts,shd->thd", scores, v).reshape(n, -1)
            x = x + attended @ w[b + "attn_output.weight"].T
            h = self._norm(x, w[b + "ffn_norm.weight"])
            gate, up = h @ w[b + "ffn_gate.weight"].T, h @ w[b + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[b + "ffn_down.weight"].T
        last = self._norm(x[-1], w["output_norm.weight"])
        return _logprobs(last @ w.get("output.weight", w["token_embd.weight"]).T)


def _logprobs(logits: Array) -> Array:
    shifted = logits.astype(np.float64) - logits.max()
    out: Array = shifted - np.log(np.exp(shifted).sum())
    return out


def llama_cpp_logprobs(gguf: Path, params: dict[str, str], prompts: list[list[int]]) -> list[Array]:
    """llama.cpp as `llm` serves it (n_batch and flash_attn from its config)."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf),
        n_ctx=2048,
        n_batch=int(params.get("n_batch", "512")),
        flash_attn=params.get("flash_attn", "on") == "on",
        logits_all=True,
        verbose=False,
    )
    out = []
    for ids in prompts:
        llm.reset()  # type: ignore[no-untyped-call]
        llm.eval(ids)
        out.append(_logprobs(np.array(llm.scores[len(ids) - 1])))
    return out


def openvino_logprobs(gguf: Path, params: dict[str, str], prompts: list[list[int]]) -> list[Array]:
    """OpenVINO GenAI's IR of the GGUF (what publish-llm serves) run on the whole prompt;
    `params` (llama.cpp's) do not apply."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        link_or_copy(gguf, Path(tmp) / "model.gguf")
        save_openvino_ir(Path(tmp) / "model.gguf")
        compiled = ov.Core().compile_model(str(Path(tmp) / "openvino_model.xml"), "CPU")
    names = {i.get_any_name() for i in compiled.inputs}
    out = []
    for ids in prompts:
        request = compiled.create_infer_request()
        request.reset_state()
        feed = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            "position_ids": np.arange(len(ids), dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        result = request.infer({k: v for k, v in feed.items() if k in names})
        out.append(_logprobs(result[compiled.output(0)][0, -1]))
    return out


def compare(reference: Array, engine: Array) -> dict[str, Any]:
    top = np.argsort(-reference)[:TOP]
    p = np.exp(reference)
    return {
        "same_first_token": bool(engine.argmax() == reference.argmax()),
        "max_abs_diff_top": float(np.abs(engine[top] - reference[top]).max()),
        "kl": float((p * (reference - engine)).sum()),
    }


def main() -> None:
    settings = Settings()
    gguf = gguf_path(settings.llm_gguf, settings.export_dir)
    prompts, check = trial_prompts(gguf)
    texts = [*prompts[1:], check]  # the timed prompts and the short check
    from llama_cpp import Llama

    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    ids = [vocab.tokenize(t.encode(), special=True) for t in texts]
    reference = Reference(gguf)
    expected = [reference.next_logprobs(i) for i in ids]
    engines = {"llama.cpp": llama_cpp_logprobs, "openvino": openvino_logprobs}
    params = config_params(settings.model_repository / "llm" / "config.pbtxt")
    rows = []
    for name, logprobs in engines.items():
        got = logprobs(gguf, params, ids)
        per_prompt = [compare(e, g) for e, g in zip(expected, got, strict=True)]
        trial = judge(gguf, params, prompts, try_engine(name, gguf, params, prompts))
        rows.append({
            "engine": name,
            "prompts": per_prompt,
            "same_first_token": sum(p["same_first_token"] for p in per_prompt),
            "max_abs_diff_top": max(p["max_abs_diff_top"] for p in per_prompt),
            "kl_max": max(p["kl"] for p in per_prompt),
            "regret": trial.regret,
            "answers": list(trial.answers),
        })  # fmt: skip
    lines = [
        f"# LLM engines against the GGUF computed in float64 ({cpu_isa()}, {gguf.name})",
        "",
        f"{len(texts)} prompts: publish-llm's timed trial prompts (~480 tokens) and its short "
        "check. Next-token log-probabilities against the float64 reference: the largest "
        f"difference over the reference's top {TOP} tokens and the KL divergence; the judge's "
        f"score of each engine's greedy answers (nats per token, publish-llm's bound "
        f"{MAX_REGRET}).",
        "",
        f"| engine | same first token | max abs diff, top {TOP} (nats) | max KL (nats) "
        "| judge score |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        regret = "-" if r["regret"] is None else f"{r['regret']:.3f}"
        lines.append(
            f"| {r['engine']} | {r['same_first_token']}/{len(texts)} | "
            f"{r['max_abs_diff_top']:.3f} | {r['kl_max']:.4f} | {regret} |"
        )
    save_results("llm_fidelity", {"cpu_isa": cpu_isa(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
