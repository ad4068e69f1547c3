"""The LLM's own tokenizer and chat template, for counting prompt tokens and building prompts.

Read from the GGUF file (llama.cpp, vocabulary only: ~0.1 s, no weights). Without a GGUF (an
OpenAI-compatible API serving some other model) tokens are estimated from characters.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, cast

from orchestrator.settings import Settings

# Used when a GGUF carries no template (base-model conversions): the family's own turn
# markers, else ChatML. Gemma has no system turn: it opens the first user turn. No BOS here:
# llama.cpp adds it when tokenizing.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA = (
    "{% if messages[0].role == 'system' %}{% set first = messages[0].content + '\n\n' %}"
    "{% set turns = messages[1:] %}{% else %}{% set first = '' %}{% set turns = messages %}"
    "{% endif %}{% for m in turns %}<start_of_turn>"
    "{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{{ (first if loop.first else '') + m.content }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
FAMILY_TEMPLATES = {"gemma3": GEMMA, "gemma2": GEMMA, "gemma": GEMMA}
CHARS_PER_TOKEN = 3.5  # conservative for English prose with BPE vocabularies


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatTokenizer(Protocol):
    def count(self, text: str) -> int: ...

    def render(self, messages: list[Message]) -> str:
        """The prompt text for `messages`, ending where the assistant's answer begins."""
        ...


class GGUFTokenizer:
    """Tokenizer + chat template of a GGUF model, via llama.cpp with vocab_only."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        self._lock = threading.Lock()  # llama.cpp's tokenizer calls are not documented thread-safe
        meta = self._llm.metadata
        template = meta.get("tokenizer.chat_template") or FAMILY_TEMPLATES.get(
            meta.get("general.architecture", ""), CHATML
        )
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._special(self._llm.token_eos()),
            bos_token=self._special(self._llm.token_bos()),
            add_generation_prompt=True,
        )

    def _special(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._llm.detokenize([token], special=True).decode("utf-8", "replace"))

    def count(self, text: str) -> int:
        with self._lock:
            return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def render(self, messages: list[Message]) -> str:
        response = self._formatter(messages=cast(Any, messages))
        return str(response.prompt)


class EstimatedTokenizer:
    """No tokenizer at hand: a character estimate that errs towards more tokens."""

    def count(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def render(self, messages: list[Message]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def open_tokenizer(settings: Settings) -> ChatTokenizer:
    path = settings.llm_tokenizer_path
    if path is not None and path.is_file():
        return GGUFTokenizer(path)
    if settings.llm_backend == "triton":
        raise SystemExit(f"no LLM tokenizer at {path}: run `tritonrag publish-llm`")
    return EstimatedTokenizer()
