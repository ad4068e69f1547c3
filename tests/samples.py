"""Small real documents of each supported type, built in memory."""

from __future__ import annotations

import io
import zipfile
import zlib


def pdf(*pages: str) -> bytes:
    """A valid PDF (one Helvetica text line per page), xref offsets computed."""
    streams = []
    for text in pages:
        safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({safe}) Tj ET".encode()
        streams.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return _pdf_with(streams)


def pdf_bomb(inflated_mb: int) -> bytes:
    """A PDF whose one page's content stream inflates to `inflated_mb` MiB."""
    line = b"BT /F1 12 Tf 72 720 Td (A) Tj ET\n"
    stream = zlib.compress(line * (inflated_mb * 2**20 // len(line)), 9)
    head = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream)
    return _pdf_with([head + stream + b"\nendstream"])


def _pdf_with(streams: list[bytes]) -> bytes:
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(streams)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(streams)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, stream in enumerate(streams):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(stream)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    trailer = b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
    out.write(trailer % (len(objects) + 1, xref))
    return out.getvalue()


def docx(*paragraphs: str) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def html(title: str, body: str) -> bytes:
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title><style>p {{color: red}}</style>"
        f"<script>var secret = 'script text must not be indexed';</script></head>"
        f"<body><h1>{title}</h1><p>{body}</p></body></html>"
    ).encode()


def docx_bomb(inflated_mb: int) -> bytes:
    """A valid .docx whose document.xml inflates to `inflated_mb` MiB of one repeated run."""
    from docx import Document

    buffer = io.BytesIO()
    Document().save(buffer)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb,
    ):
        for item in source.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, source.read(item))
        with bomb.open("word/document.xml", "w", force_zip64=True) as xml:
            xml.write(
                b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats'
                b'.org/wordprocessingml/2006/main"><w:body>'
            )
            para = b"<w:p><w:r><w:t>" + b"A" * 1000 + b"</w:t></w:r></w:p>"
            for _ in range(inflated_mb * 1024):
                xml.write(para)
            xml.write(b"</w:body></w:document>")
    return out.getvalue()


def nested_html(depth: int) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep"
