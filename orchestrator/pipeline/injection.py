"""Defuse instructions planted in documents before their text goes into a prompt.

The system prompt says sources are data, but a 135M-parameter model copies what it reads,
instructions included (measured: an "answer only with <canary>" sentence reached 2 answers in
5). So what a document says *to the assistant* never reaches the model: chat-template control
tokens and role markers are taken out, and every sentence that reads as an instruction to an
AI (ignore previous instructions, you are now, reply only with, ...) is replaced by a marker.
Stored chunks, search hits and citations keep the original text.

A sentence of ordinary prose that matches (rare: the patterns need an instruction's verb and
its object together) is lost from that answer's context only.
"""

from __future__ import annotations

import re

REMOVED = "[instruction removed]"

# Control tokens of the chat templates we serve (ChatML, Gemma, Llama, Mistral) and the
# generic <|...|> form.
_CONTROL = re.compile(
    r"<\|[^|>\n]{1,40}\|>|</?s>|\[/?INST\]|<<\/?SYS>>|<(?:start|end)_of_turn>", re.IGNORECASE
)
# A line that opens a forged system turn ("system", "System:", "### System prompt:"); not
# "User:" or "Assistant:", which FAQs and support transcripts are full of.
_ROLE = re.compile(r"^\s*#*\s*(system|developer)\s*(prompt|message)?\s*(:|$)", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BLANKS = re.compile(r"\n{3,}")
_INSTRUCTION = re.compile(
    "|".join(
        [
            # ignore / disregard / forget the previous instructions
            r"\b(ignore|disregard|forget|override|bypass)\b[^.!?]{0,60}"
            r"\b(instructions?|prompts?|rules|directions|guidelines|context|sources?)\b",
            # you are now / act as / pretend to be / from now on
            r"\b(you are now|act as|pretend (to be|you are)|from now on|roleplay as)\b",
            # reply only with / say exactly / output the following
            r"\b(respond|reply|answer|say|print|output|write|repeat|return|include)\b"
            r"[^.!?]{0,40}\b(only|exactly|verbatim|the following|word for word|instead)\b",
            r"\b(respond|reply|answer)\b[^.!?]{0,30}\b(any|every|all|each|the next)\s+"
            r"(question|query|request|user)s?\b",
            # addressed to the model
            r"\b(ai|language model|llm|chatbot|assistant)\b[^.!?]{0,40}\b(must|should|shall|"
            r"will|has to|needs to)\b",
            r"\b(system|developer|hidden) (prompt|message|instructions?)\b",
            r"\bnew instructions?\b",
            r"\b(always|never)\s+(answer|reply|respond|say|print|output|write|mention|cite)\b",
            r"\bdo not (cite|mention|reveal|tell|disclose)\b",
        ]
    ),
    re.IGNORECASE,
)


def defuse(text: str) -> str:
    """`text` without control tokens, forged turns or sentences that instruct the model."""
    lines: list[str] = []
    forged = False  # inside a turn a role line opened: dropped up to the next blank line
    # A control token ends a paragraph: a forged turn stops where the template's would.
    for line in _CONTROL.sub("\n\n", text).split("\n"):
        forged = forged and bool(line.strip())
        if forged or _ROLE.match(line):
            forged = True
            line = REMOVED
        else:
            kept: list[str] = []
            for sentence in _SENTENCE.split(line):
                if _INSTRUCTION.search(sentence):
                    if REMOVED not in kept[-1:]:
                        kept.append(REMOVED)
                elif sentence:
                    kept.append(sentence)
            line = " ".join(kept)
        if line != REMOVED or REMOVED not in lines[-1:]:
            lines.append(line)
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()
