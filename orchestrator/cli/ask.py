"""`tritonrag ask`: read the /ask event stream, print tokens as they come, then how many of
the answer's sentences the sources support (and the quote that replaces an answer the sources
do not support), then the sources."""

from __future__ import annotations

import json
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def ask_stream(
    base: str,
    api_key: str | None,
    collection: str,
    question: str,
    top_k: int | None,
    console: Console,
) -> bool:
    """Stream one answer to the terminal; False (after printing why) on an error."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body: dict[str, Any] = {"question": question, "stream": True}
    if top_k:
        body["top_k"] = top_k
    url = f"{base}/v1/collections/{collection}/ask"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=180) as response:
        if response.status_code != 200:
            response.read()
            console.print(f"[red]{response.status_code}: {response.text}[/red]")
            return False
        for kind, data in events(response):
            if kind == "token":
                console.print(data["text"], end="", highlight=False, soft_wrap=True)
            elif kind == "grounding":
                _grounding(console, data["grounding"])
            elif kind == "answer":  # auto mode: nothing above is supported
                console.print("[yellow]Not supported by the sources. What they say:[/yellow]")
                console.print(data["answer"], highlight=False, soft_wrap=True)
            elif kind == "citations":
                _sources(console, data["citations"] or data["sources"], bool(data["citations"]))
            elif kind == "done" and not data["covered"]:
                console.print("[yellow](no passage in the collection was relevant)[/yellow]")
            elif kind == "error":
                console.print(f"\n[red]{data['type']}: {data['message']}[/red]")
                return False
    return True


def events(response: httpx.Response) -> Any:
    """(event name, JSON data) of a server-sent event stream."""
    kind, lines = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            lines.append(line[5:].strip())
        elif not line and lines:
            yield kind, json.loads("\n".join(lines))
            kind, lines = "message", []


def _grounding(console: Console, checked: list[dict[str, Any]]) -> None:
    console.print()
    if not checked:
        return
    held = sum(c["supported"] for c in checked)
    colour = "green" if held == len(checked) else "yellow" if held else "red"
    console.print(f"[{colour}]{held} of {len(checked)} sentences supported by the sources[/]")
    for c in checked:
        if not c["supported"]:
            missing = f" (not in the sources: {', '.join(c['missing'])})" if c["missing"] else ""
            console.print(f"  [red]unsupported:[/red] {c['text']}{missing}", highlight=False)


def _sources(console: Console, rows: list[dict[str, Any]], cited: bool) -> None:
    if not rows:
        return
    title = "sources cited" if cited else "sources given (the answer cites none)"
    table = Table("#", "score", "document", "chunk", "text", title=title)
    for row in rows:
        table.add_row(
            str(row["number"]),
            f"{row['score']:.3f}",
            row["document_id"],
            str(row["chunk_index"]),
            row["snippet"][:120],
        )
    console.print(table)
