import pytest

from orchestrator.errors import ErrorCode, TritonRagError
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
