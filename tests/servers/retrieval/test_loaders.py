"""Loaders turn every supported format into text with a title; bad files fail with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragtune.servers.retrieval.loaders import LoadError, load_file


def write_pdf(path: Path, text: str) -> None:
    """Write a one-page PDF whose text layer holds `text` (built by hand: no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


def test_markdown_title_is_the_first_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("intro\n# Real title\n\nbody\n", encoding="utf-8")
    [doc] = load_file(tmp_path / "a.md")
    assert doc.title == "Real title" and "body" in doc.text


def test_html_keeps_visible_text_and_turns_headings_into_markdown(tmp_path: Path) -> None:
    (tmp_path / "p.html").write_text(
        "<html><head><title>Page</title><style>x{}</style></head><body><h2>Part</h2><p>Hello &amp; bye</p>"
        "<script>alert(1)</script></body></html>",
        encoding="utf-8",
    )
    [doc] = load_file(tmp_path / "p.html")
    assert doc.title == "Page"
    assert "## Part" in doc.text and "Hello & bye" in doc.text
    assert "alert" not in doc.text and "x{}" not in doc.text


def test_pdf_text_layer_is_extracted(tmp_path: Path) -> None:
    write_pdf(tmp_path / "d.pdf", "Hybrid retrieval in a PDF")
    [doc] = load_file(tmp_path / "d.pdf")
    assert "Hybrid retrieval in a PDF" in doc.text


def test_docx_heading_styles_become_markdown(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Chapter", level=1)
    document.add_paragraph("본문 문단입니다.")
    document.save(str(tmp_path / "w.docx"))
    [doc] = load_file(tmp_path / "w.docx")
    assert "# Chapter" in doc.text and "본문 문단입니다." in doc.text


def test_jsonl_records_become_documents_with_metadata(tmp_path: Path) -> None:
    rows = [{"_id": "d1", "title": "T1", "body": "first", "year": 2021}, {"_id": "d2", "body": "second"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    docs = load_file(tmp_path / "r.jsonl", source="r.jsonl", text_field="body")
    assert [d.source for d in docs] == ["r.jsonl#d1", "r.jsonl#d2"]
    assert docs[0].title == "T1" and docs[0].metadata["year"] == 2021 and docs[1].text == "second"


def test_json_list_without_the_text_field_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps([{"content": "x"}]), encoding="utf-8")
    with pytest.raises(LoadError, match="no string field 'text'.*text_field"):
        load_file(tmp_path / "r.json")


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("x.exe", b"MZ", "unsupported file type '.exe'"),
        ("bad.pdf", b"not a pdf", "not a readable PDF"),
        ("bad.docx", b"not a zip", "not a readable .docx"),
        ("latin.txt", b"\xff\xfe\xfa", "not UTF-8"),
        ("broken.jsonl", b'{"text": "a"}\n{oops', "not valid JSON"),
    ],
)
def test_bad_files_fail_with_a_clear_error(tmp_path: Path, name: str, data: bytes, fragment: str) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(LoadError, match=fragment):
        load_file(tmp_path / name)
