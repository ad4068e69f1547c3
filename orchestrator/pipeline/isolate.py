"""Parsing runs in a child process with a memory cap and a time limit.

Parsers are the code that reads hostile bytes (zip members, PDF object streams, HTML), and
the embedded worker also owns the vector store: a parser that blows up must take only
itself down. Children fork from a forkserver that has the parsers imported (a few ms per
document); each gets `memory_mb` of address space above what an idle parser holds, and is
killed after `timeout_s` (by its parent, or by the kernel's CPU limit if the parent died).
"""

from __future__ import annotations

import math
import multiprocessing
import resource
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from orchestrator.pipeline.parse import DocType, ParseError, extract_text

_PRELOAD = ["orchestrator.pipeline.parse", "pypdf", "docx", "lxml.html"]
_context: Any = None


@dataclass(frozen=True)
class ParseLimits:
    timeout_s: float
    memory_mb: int

    def __call__(self, data: bytes, doc_type: DocType) -> str:
        return parse_isolated(data, doc_type, self)


def parse_isolated(data: bytes, doc_type: DocType, limits: ParseLimits) -> str:
    """`extract_text` in a child process; ParseError when it fails, overruns or dies."""
    context = _forkserver()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_parse_child,
        args=(send, data, doc_type, limits.memory_mb, limits.timeout_s),
        daemon=True,
    )
    child.start()
    send.close()
    try:
        if not receive.poll(limits.timeout_s):
            raise ParseError(f"parsing took longer than {limits.timeout_s:g} s")
        kind, value = receive.recv()
    except EOFError:  # it died without a word: killed, or crashed in C code
        child.join(5)
        raise ParseError(f"the parser died (exit code {child.exitcode})") from None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)
    if kind == "memory":
        raise ParseError(f"parsing needed more than {limits.memory_mb} MiB")
    if kind == "error":
        raise ParseError(value)
    return str(value)


def _parse_child(
    send: Connection, data: bytes, doc_type: DocType, memory_mb: int, timeout_s: float
) -> None:
    idle = _address_space_bytes()
    limit = idle + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The kernel's own stop, should the worker that waits for this child die first.
    seconds = math.ceil(timeout_s) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    try:
        message: tuple[str, str] = ("ok", extract_text(data, doc_type))
    except ParseError as exc:
        message = ("error", exc.message)
    except MemoryError:
        message = ("memory", "")
    del data
    send.send(message)
    send.close()


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _forkserver() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context
