"""Bytes -> text. The type is sniffed from the bytes; the filename only has to agree."""

from __future__ import annotations

import io
import zipfile
from enum import StrEnum
from pathlib import PurePath

from orchestrator.errors import ErrorCode, TritonRagError


class DocType(StrEnum):
    TXT = "text/plain"
    MD = "text/markdown"
    HTML = "text/html"
    PDF = "application/pdf"
    DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


_SUFFIXES: dict[str, frozenset[DocType]] = {
    ".txt": frozenset({DocType.TXT}),
    ".text": frozenset({DocType.TXT}),
    ".md": frozenset({DocType.MD, DocType.TXT}),
    ".markdown": frozenset({DocType.MD, DocType.TXT}),
    ".html": frozenset({DocType.HTML}),
    ".htm": frozenset({DocType.HTML}),
    ".pdf": frozenset({DocType.PDF}),
    ".docx": frozenset({DocType.DOCX}),
}
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")
# Hostile input: a 2.4 MB .docx whose XML inflates to 1 GB took a worker from 2 to 9+ GB.
# Archives are judged by their declared sizes before anything is inflated (zipfile never
# inflates past a member's declared size), extracted text and PDF pages are capped.
MAX_UNZIPPED_BYTES = 64 * 2**20
MAX_ZIP_RATIO = 100  # for members over 1 MiB; real .docx XML compresses ~5-20x
MAX_TEXT_CHARS = 5_000_000
MAX_PDF_PAGES = 2_000


class ParseError(TritonRagError):
    """The document cannot be turned into text; the job ends `failed` with this reason."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_INPUT, message)


def sniff(data: bytes, filename: str) -> DocType:
    """The document type from its leading bytes, checked against the filename's suffix."""
    if not data:
        raise TritonRagError(ErrorCode.EMPTY_INPUT, f"{filename!r} is empty")
    suffix = PurePath(filename).suffix.lower()
    if suffix and suffix not in _SUFFIXES:
        raise TritonRagError(
            ErrorCode.UNSUPPORTED_TYPE,
            f"{filename!r}: {suffix} is not supported (txt, md, html, pdf, docx)",
        )
    found = _sniff_bytes(data)
    if found is None:
        raise TritonRagError(
            ErrorCode.UNSUPPORTED_TYPE, f"{filename!r} is not text, HTML, PDF or DOCX"
        )
    if found is DocType.TXT and suffix in {".md", ".markdown"}:
        found = DocType.MD
    if suffix and found not in _SUFFIXES[suffix]:
        raise TritonRagError(
            ErrorCode.UNSUPPORTED_TYPE, f"{filename!r} is named {suffix} but its bytes are {found}"
        )
    return found


def _sniff_bytes(data: bytes) -> DocType | None:
    if data.startswith(b"%PDF-"):
        return DocType.PDF
    if data.startswith(b"PK\x03\x04"):
        return DocType.DOCX if _is_docx(data) else None
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"\x00" in data[:8192]:
        return None
    try:
        data[:8192].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < 8188:  # a multi-byte character cut by the window is fine
            return None
    if head.startswith(_HTML_MARKERS) or (head.startswith(b"<?xml") and b"<html" in head):
        return DocType.HTML
    return DocType.TXT


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def extract_text(data: bytes, doc_type: DocType) -> str:
    """The document's text; raises ParseError with a reason a user can act on."""
    try:
        text = _EXTRACTORS[doc_type](data)
    except (ParseError, MemoryError):  # a MemoryError is the isolating process's to report
        raise
    except Exception as exc:
        raise ParseError(f"cannot parse {doc_type.name}: {type(exc).__name__}: {exc}") from exc
    text = text.replace("\x00", "").strip()
    if len(text) > MAX_TEXT_CHARS:
        raise ParseError(f"the document has over {MAX_TEXT_CHARS} characters of text")
    if not text:
        raise ParseError(f"no text found in this {doc_type.name} document")
    return text


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 at byte {exc.start}") from exc


def _html(data: bytes) -> str:
    import lxml.html

    # libxml2 is linear in the input and stops at 256 levels of nesting (lexbor took 40 s on
    # 100,000 nested <div>s: its time grows with depth times length).
    parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True)
    root = lxml.html.document_fromstring(data.decode("utf-8", errors="replace"), parser=parser)
    if any("depth" in error.message for error in parser.error_log):
        raise ParseError("the HTML nests elements deeper than 256 levels")
    for node in root.xpath("//script|//style|//noscript|//template"):
        node.drop_tree()
    body = root.find("body")
    parts = (piece.strip() for piece in (root if body is None else body).itertext())
    return "\n".join(piece for piece in parts if piece)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        raise ParseError("the PDF is encrypted")
    if len(reader.pages) > MAX_PDF_PAGES:
        raise ParseError(f"the PDF has {len(reader.pages)} pages; the limit is {MAX_PDF_PAGES}")
    pages, size = [], 0
    for page in reader.pages:
        pages.append(page.extract_text() or "")
        size += len(pages[-1])
        if size > MAX_TEXT_CHARS:
            raise ParseError(f"the document has over {MAX_TEXT_CHARS} characters of text")
    return "\n\n".join(pages)


def _docx(data: bytes) -> str:
    import docx

    _check_archive(data)
    document = docx.Document(io.BytesIO(data))
    return "\n\n".join(p.text for p in document.paragraphs if p.text.strip())


def _check_archive(data: bytes) -> None:
    """Refuse a zip bomb from its central directory, before inflating anything."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    total = sum(m.file_size for m in members)
    if total > MAX_UNZIPPED_BYTES:
        raise ParseError(
            f"the archive inflates to {total} bytes; the limit is {MAX_UNZIPPED_BYTES}"
        )
    for m in members:
        if m.file_size > 2**20 and m.file_size > MAX_ZIP_RATIO * max(1, m.compress_size):
            raise ParseError(
                f"{m.filename} inflates {m.file_size // max(1, m.compress_size)}x; "
                f"the limit is {MAX_ZIP_RATIO}x"
            )


_EXTRACTORS = {
    DocType.TXT: _text,
    DocType.MD: _text,
    DocType.HTML: _html,
    DocType.PDF: _pdf,
    DocType.DOCX: _docx,
}
