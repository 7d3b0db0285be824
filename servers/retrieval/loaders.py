"""Read supported files into plain documents: text plus a title and metadata.

HTML and DOCX headings become markdown `#` lines so the chunker can follow their structure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ragtune.servers.retrieval.errors import IngestError

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".rst"}
SUFFIXES = TEXT_SUFFIXES | {".html", ".htm", ".pdf", ".docx", ".json", ".jsonl"}


class LoadError(IngestError):
    """Raised when a file cannot be read as a document; the message says how to fix it."""


@dataclass
class LoadedDoc:
    """A document ready to chunk: `source` identifies it within its collection."""

    source: str
    text: str
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_file(path: Path, *, source: str | None = None, text_field: str = "text") -> list[LoadedDoc]:
    """Read one file into documents (JSON/JSONL give one per record); raise LoadError on bad input."""
    source = source or str(path)
    suffix = path.suffix.lower()
    reader = READERS.get(suffix)
    if reader is None:
        raise LoadError(
            f"unsupported file type {suffix or '(none)'!r} for {path.name}: supported are {', '.join(sorted(SUFFIXES))}"
        )
    if suffix in {".json", ".jsonl"}:
        return read_records(path, source, text_field)
    text, title = reader(path)
    return [LoadedDoc(source, text, title or path.stem, {"type": suffix[1:]})]


def read_text(path: Path) -> tuple[str, str | None]:
    """Read UTF-8 text; the first markdown `# ` heading is the title."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(f"{path.name} is not UTF-8 text: convert it to UTF-8 and ingest again") from e
    for line in text.splitlines():
        if line.startswith("# "):
            return text, line[2:].strip()
    return text, None


class _HTMLText(HTMLParser):
    """Collect visible text, turning h1-h6 into markdown headings and block tags into paragraphs."""

    BLOCKS = {"p", "div", "section", "article", "li", "tr", "br", "pre", "blockquote", "table", "ul", "ol"}
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS or (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456"):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(" ".join(data.split()) if data.strip() else " ")


def read_html(path: Path) -> tuple[str, str | None]:
    """Extract the visible text of an HTML page."""
    parser = _HTMLText()
    parser.feed(read_text(path)[0])
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n", parser.title.strip() or None


def read_pdf(path: Path) -> tuple[str, str | None]:
    """Extract the text layer of a PDF, pages separated by blank lines."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, OSError, ValueError) as e:
        raise LoadError(f"{path.name} is not a readable PDF ({e}): check the file or export it again") from e
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise LoadError(f"{path.name} has no text layer (a scanned PDF?): run OCR first")
    return text + "\n", title or None


def read_docx(path: Path) -> tuple[str, str | None]:
    """Extract the paragraphs of a Word file; 'Heading N' styles become markdown headings."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError) as e:
        raise LoadError(f"{path.name} is not a readable .docx file: save it again as Word .docx") from e
    parts: list[str] = []
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = para.style.name if para.style is not None else ""
        level = style.removeprefix("Heading ").strip()
        if style == "Title":
            parts.append("# " + text)
        elif style.startswith("Heading ") and level.isdigit():
            parts.append("#" * min(int(level), 6) + " " + text)
        else:
            parts.append(text)
    title = document.core_properties.title or None
    return "\n\n".join(parts) + "\n", title


def read_records(path: Path, source: str, text_field: str) -> list[LoadedDoc]:
    """Read JSON (a list of objects) or JSONL: each record's `text_field` is one document."""
    raw = read_text(path)[0]
    try:
        if path.suffix.lower() == ".jsonl":
            records = [(n, json.loads(line)) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
        else:
            data = json.loads(raw)
            data = data if isinstance(data, list) else [data]
            records = list(enumerate(data, 1))
    except json.JSONDecodeError as e:
        raise LoadError(f"{path.name} is not valid JSON (line {e.lineno}): {e.msg}") from e
    docs = [record_doc(path, source, n, rec, text_field) for n, rec in records]
    if not docs:
        raise LoadError(f"{path.name} holds no records")
    return docs


def record_doc(path: Path, source: str, n: int, record: Any, text_field: str) -> LoadedDoc:
    """Turn one JSON record into a document; scalar fields other than the text become metadata."""
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise LoadError(
            f"{path.name} record {n} has no string field {text_field!r}: "
            "pass text_field with the name of the field that holds the text"
        )
    key = record.get("id", record.get("_id", n))
    meta = {k: v for k, v in record.items() if k != text_field and isinstance(v, str | int | float | bool)}
    meta.update(file=source, type=path.suffix[1:])
    title = str(record.get("title") or f"{path.stem} #{key}")
    return LoadedDoc(f"{source}#{key}", record[text_field], title, meta)


READERS: dict[str, Callable[[Path], tuple[str, str | None]]] = {
    **dict.fromkeys(TEXT_SUFFIXES, read_text),
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".json": read_text,
    ".jsonl": read_text,
}
