"""Decoding that does not loop: where a small model's answer starts repeating itself.

Greedy decoding of a 135M model sometimes falls into a loop: the same line again and again,
or a digit or short phrase repeated until the token budget runs out ("63799999...", seen in
the held-out check). The llm lane stops the generation where the loop starts and keeps what
came before (workers/answer.py).
"""

from __future__ import annotations

import re

MIN_LINE_CHARS = 16  # shorter lines ("- yes", blank) repeat in honest answers
# One piece of 1-12 characters repeated 8 times or more, at least 32 characters in all, at
# the end: no number, rule or table in an answer looks like that.
_RUN = re.compile(r"(.{1,12}?)\1{7,}$", re.S)
MIN_RUN_CHARS = 32


def loop_start(text: str) -> int | None:
    """The offset in `text` where a degenerate repeat begins, or None."""
    run = _RUN.search(text)
    if run is not None and len(run.group(0)) >= MIN_RUN_CHARS:
        return run.start() + len(run.group(1))  # keep the piece once
    seen: set[str] = set()
    offset = 0
    for line in text.split("\n")[:-1]:  # complete lines only: the last may still grow
        key = " ".join(line.split()).lower()
        if len(key) >= MIN_LINE_CHARS and key in seen:
            return offset
        seen.add(key)
        offset += len(line) + 1
    return None
