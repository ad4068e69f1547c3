import pytest

from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.pipeline import parse
from orchestrator.pipeline.parse import DocType, ParseError, extract_text, sniff
from tests import samples


@pytest.mark.parametrize(
    ("data", "name", "kind", "expected"),
    [
        (b"plain words here", "a.txt", DocType.TXT, "plain words here"),
        (b"# Title\n\nbody", "notes.md", DocType.MD, "# Title\n\nbody"),
        (samples.html("Hello", "html body text"), "page.html", DocType.HTML, "html body text"),
        (samples.pdf("pdf page one", "pdf page two"), "doc.pdf", DocType.PDF, "pdf page two"),
        (samples.docx("docx paragraph", "second one"), "doc.docx", DocType.DOCX, "second one"),
        (samples.pdf("no suffix still a pdf"), "upload", DocType.PDF, "no suffix"),
    ],
)
def test_types_are_sniffed_from_bytes_and_text_extracted(
    data: bytes, name: str, kind: DocType, expected: str
) -> None:
    assert sniff(data, name) is kind
    assert expected in extract_text(data, kind)


def test_html_drops_scripts_and_styles() -> None:
    text = extract_text(samples.html("T", "visible"), DocType.HTML)
    assert "visible" in text and "secret" not in text and "color" not in text


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"just text", "report.pdf"),  # the name says pdf, the bytes do not
        (samples.pdf("x"), "notes.txt"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "a.txt"),
        (b"MZ\x90\x00\x03\x00\x00\x00", "setup.exe"),
        (b"PK\x03\x04not really a zip", "x.docx"),
        (b"\xff\xfe\xfd garbage that is not utf-8 \xc3\x28", "a.txt"),
    ],
)
def test_unsupported_or_mismatched_types_are_415(data: bytes, name: str) -> None:
    with pytest.raises(TritonRagError) as info:
        sniff(data, name)
    assert info.value.code is ErrorCode.UNSUPPORTED_TYPE


def test_empty_is_empty_input() -> None:
    with pytest.raises(TritonRagError) as info:
        sniff(b"", "a.txt")
    assert info.value.code is ErrorCode.EMPTY_INPUT


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"%PDF-1.4\n1 0 obj garbage without xref", DocType.PDF),
        (samples.pdf("x")[:200], DocType.PDF),
        (b"   \n\t ", DocType.TXT),
        (samples.docx(), DocType.DOCX),
        (b"<html><body><script>only script</script></body></html>", DocType.HTML),
    ],
)
def test_broken_or_textless_documents_raise_parse_error(data: bytes, kind: DocType) -> None:
    with pytest.raises(ParseError):
        extract_text(data, kind)


def test_a_docx_bomb_fails_before_it_is_inflated() -> None:
    data = samples.docx_bomb(200)
    assert len(data) < 2 * 2**20 and sniff(data, "bomb.docx") is DocType.DOCX
    with pytest.raises(ParseError, match="inflates"):  # judged from the central directory
        extract_text(data, DocType.DOCX)


def test_text_past_the_cap_fails_with_a_reason() -> None:
    text = ("word " * (parse.MAX_TEXT_CHARS // 5 + 10)).encode()
    with pytest.raises(ParseError, match="characters of text"):
        extract_text(text, DocType.TXT)


def test_a_pdf_stream_bomb_fails_at_pypdfs_output_limit() -> None:
    data = samples.pdf_bomb(1024)
    assert len(data) < 4 * 2**20
    with pytest.raises(ParseError, match="Limit reached"):
        extract_text(data, DocType.PDF)


def test_html_nested_past_256_levels_fails_at_once() -> None:
    with pytest.raises(ParseError, match="deeper than 256"):
        extract_text(samples.nested_html(1_000_000), DocType.HTML)
    assert extract_text(samples.nested_html(200), DocType.HTML) == "deep"
