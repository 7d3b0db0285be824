"""Read supported files into plain documents: text plus a title and metadata.

HTML and DOCX headings become markdown `#` lines so the chunker can follow their structure.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ragtune.servers.retrieval.errors import IngestError

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".rst"}
SUFFIXES = TEXT_SUFFIXES | {".html", ".htm", ".pdf", ".docx", ".json", ".jsonl"}
DEFAULT_MAX_BYTES = 25_000_000
# Zip-based input (docx): a 1 MB file holding a 1 GB document.xml took 2.1 GB of memory (issue #12).
MAX_UNZIPPED_BYTES = 100_000_000
MAX_ZIP_RATIO = 100  # uncompressed / compressed, for any member over 1 MB


class LoadError(IngestError):
    """Raised when a file cannot be read as a document; the message says how to fix it."""


@dataclass
class LoadedDoc:
    """A document ready to chunk: `source` identifies it within its collection."""

    source: str
    text: str
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_file(
    path: Path, *, source: str | None = None, text_field: str = "text", max_bytes: int = DEFAULT_MAX_BYTES
) -> list[LoadedDoc]:
    """Read one file into documents (JSON/JSONL give one per record); raise LoadError on bad input."""
    source = source or str(path)
    suffix = path.suffix.lower()
    reader = READERS.get(suffix)
    if reader is None:
        raise LoadError(
            f"unsupported file type {suffix or '(none)'!r} for {path.name}: supported are {', '.join(sorted(SUFFIXES))}"
        )
    data = read_regular(path, max_bytes)
    if suffix in {".json", ".jsonl"}:
        return read_records(path, data, source, text_field)
    text, title = reader(path, data)
    return [LoadedDoc(source, text, title or path.stem, {"type": suffix[1:]})]


def read_regular(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of at most `max_bytes`; a FIFO, socket or device is refused without blocking."""
    # O_NONBLOCK: opening a FIFO with no writer would block forever (issue #12); fstat then checks the opened file.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise LoadError(f"{path.name} cannot be opened ({e.strerror}): check its permissions") from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise LoadError(f"{path.name} is not a regular file (a FIFO, socket or device): only files are ingested")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LoadError(
            f"{path.name} is over the {max_bytes / 1e6:g} MB limit: split it, or raise RAGTUNE_RETRIEVAL_MAX_FILE_MB"
        )
    return data


def decode(name: str, data: bytes) -> str:
    """Decode UTF-8 (a BOM is dropped) or say how to fix the file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LoadError(f"{name} is not UTF-8 text: convert it to UTF-8 and ingest again") from e


def read_text(path: Path, data: bytes) -> tuple[str, str | None]:
    """Read UTF-8 text; the first markdown `# ` heading outside code fences is the title."""
    from ragtune.servers.retrieval.chunking import markdown_title

    text = decode(path.name, data)
    return text, markdown_title(text)


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


def read_html(path: Path, data: bytes) -> tuple[str, str | None]:
    """Extract the visible text of an HTML page."""
    parser = _HTMLText()
    parser.feed(decode(path.name, data))
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n", parser.title.strip() or None


def read_pdf(path: Path, data: bytes) -> tuple[str, str | None]:
    """Extract the text layer of a PDF, pages separated by blank lines."""
    from pypdf import PdfReader

    # pypdf caps every decompressed stream (pypdf.Configuration, 75 MB each); the page text is capped here.
    pages: list[str] = []
    try:
        reader = PdfReader(io.BytesIO(data))
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            if sum(map(len, pages)) > MAX_UNZIPPED_BYTES:
                raise LoadError(f"{path.name} expands to over {MAX_UNZIPPED_BYTES / 1e6:g} MB of text: split it")
        title = reader.metadata.title if reader.metadata else None
    except LoadError:
        raise
    except Exception as e:  # any parser failure (bad xref, bomb limit, recursion) is the file's fault
        raise LoadError(f"{path.name} is not a readable PDF ({_first(e)}): check the file or export it again") from e
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise LoadError(f"{path.name} has no text layer (a scanned PDF?): run OCR first")
    return text + "\n", title or None


def check_zip(name: str, data: bytes) -> None:
    """Refuse a zip whose members would expand past MAX_UNZIPPED_BYTES or by more than MAX_ZIP_RATIO."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError) as e:
        raise LoadError(f"{name} is not a readable .docx file (not a zip): save it again as Word .docx") from e
    total = sum(m.file_size for m in members)
    bomb = [m for m in members if m.file_size > 1_000_000 and m.file_size > MAX_ZIP_RATIO * max(1, m.compress_size)]
    if total > MAX_UNZIPPED_BYTES or bomb:
        raise LoadError(
            f"{name} expands to {total / 1e6:.0f} MB ({bomb[0].filename if bomb else 'in all'}): refused as a "
            "decompression bomb; save the document again or split it"
        )


def read_docx(path: Path, data: bytes) -> tuple[str, str | None]:
    """Extract the paragraphs of a Word file; 'Heading N' styles become markdown headings."""
    import docx

    check_zip(path.name, data)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as e:  # python-docx and lxml raise many types for a damaged file
        raise LoadError(f"{path.name} is not a readable .docx file ({_first(e)}): save it again as Word .docx") from e
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


def read_records(path: Path, data: bytes, source: str, text_field: str) -> list[LoadedDoc]:
    """Read JSON (a list of objects) or JSONL: each record's `text_field` is one document."""
    raw = decode(path.name, data)
    records: list[tuple[int, Any]] = []
    try:
        if path.suffix.lower() == ".jsonl":
            for n, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    records.append((n, _loads(path.name, line, n)))
        else:
            parsed = _loads(path.name, raw, None)
            records = list(enumerate(parsed if isinstance(parsed, list) else [parsed], 1))
    except json.JSONDecodeError as e:
        lineno = n if path.suffix.lower() == ".jsonl" else e.lineno
        raise LoadError(f"{path.name} is not valid JSON (line {lineno}): {e.msg}") from e
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


def _loads(name: str, text: str, line: int | None) -> Any:
    """Parse JSON; nesting too deep for the parser is a LoadError with the line, not a crash."""
    try:
        return json.loads(text)
    except RecursionError as e:
        where = f" (line {line})" if line else ""
        raise LoadError(f"{name} nests JSON too deeply{where}: flatten the records") from e


def _first(e: Exception) -> str:
    """Return the first line of an exception's message, shortened: errors stay one line."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


READERS: dict[str, Callable[[Path, bytes], tuple[str, str | None]]] = {
    **dict.fromkeys(TEXT_SUFFIXES, read_text),
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".json": read_text,
    ".jsonl": read_text,
}
