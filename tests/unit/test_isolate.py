"""The parser's own process: same text as in-process, and its limits hold."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfWriter

from orchestrator.pipeline.isolate import ParseLimits
from orchestrator.pipeline.parse import DocType, ParseError, extract_text
from orchestrator.settings import Settings
from tests import samples

DEFAULTS = ParseLimits(Settings().parse_timeout_s, Settings().parse_memory_mb)


@pytest.mark.parametrize(
    ("data", "doc_type"),
    [
        (b"# Guide\n\nPlain words.", DocType.MD),
        (samples.html("Title", "Body words."), DocType.HTML),
        (samples.pdf("Page one.", "Page two."), DocType.PDF),
        (samples.docx("First.", "Second."), DocType.DOCX),
    ],
)
def test_isolated_parse_gives_the_same_text(data: bytes, doc_type: DocType) -> None:
    assert DEFAULTS(data, doc_type) == extract_text(data, doc_type)


def test_a_parse_error_comes_back_with_its_reason() -> None:
    with pytest.raises(ParseError, match="not valid UTF-8"):
        DEFAULTS(b"abc\xff\xfe", DocType.TXT)


def test_past_its_memory_the_parser_fails_and_the_caller_lives() -> None:
    text = ("word " * 800_000).encode()  # 4 MB; decoding and stripping need several copies
    with pytest.raises(ParseError, match="more than 1 MiB"):
        ParseLimits(60, 1)(text, DocType.TXT)
    assert DEFAULTS(text, DocType.TXT).startswith("word")


def test_past_its_time_the_parser_is_killed() -> None:
    writer = PdfWriter()
    for _ in range(400):
        writer.add_blank_page(612, 792)
    pdf = io.BytesIO()
    writer.write(pdf)
    with pytest.raises(ParseError, match=r"took longer than 0\.001 s"):
        ParseLimits(0.001, 1024)(pdf.getvalue(), DocType.PDF)
