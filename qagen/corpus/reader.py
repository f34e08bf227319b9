"""Read a folder of documents into :class:`~qagen.core.types.Document` values.

:func:`iter_documents` walks a folder in a stable order (sorted by relative
POSIX path) and yields one :class:`Document` or :class:`SkippedFile` per file,
streaming: the corpus is never held in memory.

Skip policy -- one bad file never stops the run and no exception escapes for
it; every file is either read or reported with a short reason:

* hidden files and folders (name starts with ``.``) are skipped *silently*;
* symlinked folders are not followed (no loops) and are reported; symlinked
  files are followed while they stay inside the folder: one whose target lies
  outside it -> ``symlink leaves the folder`` (``follow_symlinks`` opts in);
  broken links and link loops are reported;
* folders in ``exclude`` (qagen's own output folder, when it lies inside the
  documents) are not entered and not listed: the caller warns once;
* unknown extensions -> ``unsupported format '.xyz'``;
* files over ``max_bytes`` -> ``too large (...)``, decided from ``stat`` only;
* unreadable files -> ``unreadable: <OS reason>``;
* text with NUL bytes or many control characters -> ``binary content``;
  text is decoded as UTF-8 (BOM ok), UTF-16/32 with a BOM, plausible
  cp1252/latin-1, else charset-normalizer's best guess; failing all of these
  -> ``undecodable text``;
* HTML/PDF/DOCX that markitdown cannot convert ->
  ``PDF could not be converted: <ExceptionType>: <message>``;
* nothing left after normalisation -> ``empty``;
* special files (FIFOs, sockets, devices) -> ``not a regular file``;
* names that are not valid UTF-8 (file or folder) -> ``name is not valid UTF-8``,
  listed under the name with the bad bytes escaped (``bad\\xffname.txt``).
"""

from __future__ import annotations

import codecs
import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

from qagen.core import ids
from qagen.core.types import Document, SkippedFile
from qagen.corpus.walk import iter_entries

FORMATS = {
    ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
    ".rst": "rst", ".html": "html", ".htm": "html", ".pdf": "pdf", ".docx": "docx",
}
TITLE_MAX = 120
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_ATX_H1 = re.compile(r"^# +(.+?)(?:\s+#+)?\s*$")
_PDF_DATE = re.compile(r"^(?:D:)?(\d{4})(\d{2})?(\d{2})?")
_HTML_META = {"author": "author", "date": "date", "dc.date": "date", "dcterms.date": "date",
              "article:published_time": "date", "dc.creator": "author"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ASCII_LETTERS = re.compile(r"[A-Za-z]")
_CP1252_OK = set("ŒœŠšŽžŸ“”‘’–—…«»°§©®€£·•™¿¡ºª\xa0")
_converters: dict[str, object] = {}


class _Skip(Exception):
    """Internal: the file cannot be used; ``args[0]`` is the reason."""


def iter_documents(
    root: Path, *, max_bytes: int = 50_000_000, follow_symlinks: bool = False, exclude: tuple[Path, ...] = ()
) -> Iterator[Document | SkippedFile]:
    """Yield a Document or SkippedFile for every non-hidden file under ``root``.

    Order is stable: sorted by relative POSIX path (code point order).
    Hidden files and folders (names starting with ``.``) are skipped silently.
    See the module docstring for the full skip policy. If ``root`` is a file,
    that one file is read. A missing ``root`` raises FileNotFoundError.
    """
    for entry in iter_entries(root, follow_symlinks=follow_symlinks, exclude=exclude):
        yield entry if isinstance(entry, SkippedFile) else read_file(entry[1], entry[0], max_bytes)


def read_file(path: Path, rel: str, max_bytes: int = 50_000_000) -> Document | SkippedFile:
    """One file as a Document, or a SkippedFile saying why not (never raises for a bad file)."""
    try:
        return _read(path, rel, max_bytes)
    except _Skip as s:
        return SkippedFile(rel, str(s.args[0]))
    except OSError as e:
        return SkippedFile(rel, f"unreadable: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - one bad file must never stop the run
        return SkippedFile(rel, f"unexpected error: {_exc_text(e)}")


def _read(path: Path, rel: str, max_bytes: int) -> Document:
    ext = path.suffix.lower()
    kind = FORMATS.get(ext)
    if kind is None:
        raise _Skip(f"unsupported format '{ext}'" if ext else "unsupported format (no extension)")
    size = os.stat(path).st_size
    if size > max_bytes:
        raise _Skip(f"too large ({_size(size)} > {_size(max_bytes)} limit)")
    if size == 0:
        raise _Skip("empty")
    meta: dict[str, str] = {}
    title, title_from = "", "heading"
    if kind in ("text", "markdown", "rst"):
        text = ids.normalise_text(_decode(_read_bytes(path, max_bytes)))
        fmt = kind
        if kind == "markdown":
            text, meta = _split_front_matter(text)
            title_from = "metadata" if meta.get("title") else "heading"
            title = meta.pop("title", "") or _md_title(text)
        elif kind == "rst":
            from qagen.corpus.chunker import (
                rst_to_markdown,  # same title rules as the chunker
            )

            title = _md_title(rst_to_markdown("\n".join(text.split("\n", 3000)[:3000])))
        else:
            title, title_from = heading_like(_first_line(text)), "first_line"
    else:
        fmt = "markdown"
        if kind == "html":
            html = _decode(_read_bytes(path, max_bytes))
            result = _convert(kind, io.BytesIO(_main_content(html).encode("utf-8")))
            meta = _html_meta(html)
            title_from = "metadata" if (result.title or "").strip() else "heading"
            title = (result.title or "").strip() or _md_title(result.markdown)
        else:
            with open(path, "rb") as fh:
                result = _convert(kind, fh)
            info = _pdf_info(path) if kind == "pdf" else _docx_info(path)
            meta = {k: v for k, v in info.items() if k != "title"}
            title_from = "metadata" if info.get("title") else ("first_line" if kind == "pdf" else "heading")
            title = info.get("title") or (heading_like(_first_line(result.markdown)) if kind == "pdf"
                                          else _md_title(result.markdown))
        text = ids.normalise_text(result.markdown)
    if not text:
        raise _Skip("empty" if kind != "pdf" else "empty (no extractable text; scanned PDF?)")
    title = _clip(" ".join(title.split()))
    if not title:  # the document states none: the pipeline asks the model for a short one (qagen/generate)
        title, title_from = " ".join(re.split(r"[_\W]+", path.stem)).strip() or path.stem, "filename"
    meta_t = tuple(sorted((k, " ".join(v.split())) for k, v in meta.items() if v and v.strip()))
    return Document(doc_id=ids.doc_id(text), path=rel, title=title, text=text, fmt=fmt, meta=meta_t,
                    title_from=title_from)


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    with open(path, "rb") as fh:
        # read(n) allocates n bytes up front: ask for the file's size, not the limit
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(min(size, max_bytes) + 1)
        if len(data) > size:  # grew since stat: read on, up to the limit
            data += fh.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:  # grew since stat
        raise _Skip(f"too large (> {_size(max_bytes)} limit)")
    return data


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} bytes"


def _decode(data: bytes) -> str:
    """UTF-8 (BOM ok), UTF-16/32 with BOM, plausible cp1252/latin-1, else charset-normalizer."""
    boms = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    if data.startswith(boms):
        text = data.decode("utf-32" if data.startswith(boms[:2]) else "utf-16", errors="replace")
    else:
        if b"\x00" in data:
            raise _Skip("binary content")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = _decode_legacy(data)
    if len(_CONTROL.findall(text)) > len(text) // 100:
        raise _Skip("binary content")
    if text.count("\ufffd") > len(text) // 100:
        raise _Skip("undecodable text")
    return text


def _decode_legacy(data: bytes) -> str:
    # charset-normalizer often mistakes short latin-1 text for cp1250 or a Mac
    # code page, so first accept cp1252 when its non-ASCII characters are a few
    # Western letters and punctuation (Cyrillic, Greek, CJK... fail this test).
    try:
        text = data.decode("cp1252")
        high = _NON_ASCII.findall(text)
        if len(high) <= 0.5 * len(_ASCII_LETTERS.findall(text)) and all(
                c in _CP1252_OK or (c.isalpha() and "\xc0" <= c <= "\xff") for c in set(high)):
            return text
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise _Skip("undecodable text")
    return str(best)


def _convert(kind: str, stream):
    """Convert with markitdown, allowing only the converter for ``kind``.

    (A full MarkItDown falls back to its plain-text converter, which would
    "convert" a corrupt PDF into its raw bytes.)
    """
    md = _converters.get(kind)
    if md is None:
        from markitdown import MarkItDown
        from markitdown.converters import DocxConverter, HtmlConverter, PdfConverter

        md = MarkItDown(enable_plugins=False, enable_builtins=False)
        md.register_converter({"pdf": PdfConverter, "docx": DocxConverter,
                               "html": HtmlConverter}[kind]())
        _converters[kind] = md
    from markitdown import StreamInfo

    info = StreamInfo(extension="." + kind, charset="utf-8" if kind == "html" else None)
    try:
        return md.convert_stream(stream, stream_info=info)
    except Exception as e:  # noqa: BLE001
        attempts = [a for a in getattr(e, "attempts", None) or [] if a.exc_info]
        cause = attempts[0].exc_info[1] if attempts else e
        if "password" in type(cause).__name__.lower() or "encrypt" in type(cause).__name__.lower():
            raise _Skip(f"{kind.upper()} is password-protected (encrypted): {type(cause).__name__}") from None
        raise _Skip(f"{kind.upper()} could not be converted: {_exc_text(cause)}") from None


def _exc_text(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    msg = msg[:200] + "..." if len(msg) > 200 else msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _split_front_matter(text: str) -> tuple[str, dict[str, str]]:
    """Strip YAML front matter; return (text, {title, date, author}). Bad YAML: keep as text."""
    m = _FRONT_MATTER.match(text[:200_000])
    if not m:
        return text, {}
    import yaml

    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return text, {}
    if not isinstance(data, dict):
        return text, {}
    meta = {}
    for key in ("title", "date", "author", "authors"):
        value = data.get(key)
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value if v is not None)
        if value is not None and not isinstance(value, dict):
            meta["author" if key == "authors" else key] = str(value)
    return text[m.end():].strip(), meta


def _md_title(text: str) -> str:
    """First level-1 heading (ATX ``# x`` or setext ``x`` over ``===``), outside code fences."""
    fence = ""
    prev = ""
    for line in text.split("\n", 5000)[:5000]:
        s = line.strip()
        if fence:
            fence = "" if s.startswith(fence) else fence
        elif s.startswith(("```", "~~~")):
            fence = s[:3]
        elif m := _ATX_H1.match(line):
            return m.group(1)
        elif prev and s and set(s) == {"="}:
            return prev
        prev = s if not fence else ""
    return ""


def _first_line(text: str) -> str:
    for line in text.split("\n", 200):
        if line.strip():
            return line.strip().lstrip("#").strip()
    return ""


HEADING_MAX_WORDS = 14


def heading_like(line: str) -> str:
    """``line`` if it reads as a heading (short, no closing full stop or comma), else "" (a sentence is no title).

    ``CITY — A strong indication on Friday that the ... is on the verge of ...`` is an article's first sentence;
    used as a title it ends up inside every question.
    """
    s = " ".join(line.split())
    words = s.split()
    if not s or len(words) > HEADING_MAX_WORDS or len(s) > 100 or s.endswith((".", ",", ";", ":", "!")):
        return ""
    if not any(ch.isalpha() for ch in s):
        return ""
    return s


def _clip(s: str) -> str:
    return s if len(s) <= TITLE_MAX else s[: TITLE_MAX - 3].rstrip() + "..."


_BOILERPLATE = ("nav", "header", "footer", "aside", "script", "style", "noscript", "form")
_MAIN = ("main", "article", "[role=main]", "div.body", "div#content", "div.content")


def _main_content(html: str) -> str:
    """Keep the page's main content: drop navigation, headers, footers and sidebars.

    Documentation sites (Sphinx, MkDocs) wrap the text in <main>, <article>
    or role="main"; everything outside it is menus that would otherwise turn
    into chunks of links. Pages without such a wrapper keep their whole body.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.string if soup.title and soup.title.string else ""
    for tag in soup.find_all(_BOILERPLATE):
        tag.decompose()
    for tag in soup.select("div.sphinxsidebar, div.related, div.footer, a.headerlink"):
        tag.decompose()
    main = next((found for sel in _MAIN if (found := soup.select_one(sel)) is not None), None)
    if main is None:
        return str(soup)
    return f"<html><head><title>{title}</title></head><body>{main}</body></html>"


def _html_meta(html: str) -> dict[str, str]:
    from bs4 import BeautifulSoup

    meta: dict[str, str] = {}
    head = BeautifulSoup(html, "html.parser").find("head")
    for tag in head.find_all("meta") if head else []:
        name = str(tag.get("name") or tag.get("property") or "").lower()
        key = _HTML_META.get(name)
        if key and key not in meta and tag.get("content"):
            meta[key] = str(tag["content"])
    return meta


def _pdf_info(path: Path) -> dict[str, str]:
    """Title, author and creation date from the PDF info dictionary (best effort)."""
    try:
        from pdfminer.pdfdocument import PDFDocument
        from pdfminer.pdfparser import PDFParser
        from pdfminer.pdftypes import resolve1
        from pdfminer.utils import decode_text

        with open(path, "rb") as fh:
            info = resolve1(PDFDocument(PDFParser(fh)).info[0])
            raw = {key: resolve1(info.get(src)) for src, key in
                   (("Title", "title"), ("Author", "author"), ("CreationDate", "date"))}
    except Exception:  # noqa: BLE001 - metadata is optional
        return {}
    out = {k: decode_text(v).replace("\x00", "").strip() for k, v in raw.items()
           if isinstance(v, bytes)}
    if m := _PDF_DATE.match(out.get("date", "")):
        out["date"] = "-".join(g for g in m.groups() if g)
    return out


def _docx_info(path: Path) -> dict[str, str]:
    """Title, author and creation date from docProps/core.xml (best effort)."""
    ns = {"dc": "http://purl.org/dc/elements/1.1/", "dcterms": "http://purl.org/dc/terms/"}
    try:
        with zipfile.ZipFile(path) as z:
            root = ElementTree.fromstring(z.read("docProps/core.xml"))
    except Exception:  # noqa: BLE001 - metadata is optional
        return {}
    found = {key: root.findtext(tag, "", ns).strip() for tag, key in
             (("dc:title", "title"), ("dc:creator", "author"), ("dcterms:created", "date"))}
    if found["date"]:
        found["date"] = found["date"][:10]
    return found
