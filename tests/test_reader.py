"""Reader: every format read, every bad file skipped with a reason, stable order."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from qagen.core import ids
from qagen.core.types import Document, SkippedFile
from qagen.corpus import reader
from qagen.corpus.reader import iter_documents


def make_pdf(lines: list[str], *, title: str = "", author: str = "", date: str = "") -> bytes:
    """A minimal valid one-page PDF (Helvetica text, correct xref offsets)."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({s}) Tj T*" for s in lines) + " ET"
    info = " ".join(f"/{k} ({v})" for k, v in
                    (("Title", title), ("Author", author), ("CreationDate", date)) if v)
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< {info} >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info {len(objs)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return out


def make_docx(paragraphs: list[tuple[str, str]], *, creator: str = "") -> bytes:
    """A minimal .docx: (style, text) paragraphs, style "" or "Heading1"."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(
        "<w:p>" + (f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else "")
        + f"<w:r><w:t>{text}</w:t></w:r></w:p>" for style, text in paragraphs)
    ct = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Default Extension="rels" ContentType="'
                   'application/vnd.openxmlformats-package.relationships+xml"/><Default '
                   'Extension="xml" ContentType="application/xml"/><Override PartName='
                   f'"/word/document.xml" ContentType="{ct}"/></Types>')
        z.writestr("_rels/.rels",
                   '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats'
                   '.org/package/2006/relationships"><Relationship Id="rId1" Type="http://'
                   'schemas.openxmlformats.org/officeDocument/2006/relationships/'
                   'officeDocument" Target="word/document.xml"/></Relationships>')
        z.writestr("word/document.xml",
                   f'<?xml version="1.0"?><w:document xmlns:w="{w}"><w:body>{body}'
                   "</w:body></w:document>")
        if creator:
            z.writestr("docProps/core.xml",
                       '<?xml version="1.0"?><cp:coreProperties xmlns:cp="http://schemas.'
                       'openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc='
                       '"http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/'
                       f'terms/"><dc:creator>{creator}</dc:creator><dcterms:created>'
                       "2019-03-04T05:06:07Z</dcterms:created></cp:coreProperties>")
    return buf.getvalue()


NEWLINE_NAME = "notes\nüber 🙂.txt"
GOOD = {"a-c/x.txt", "a.md", "a/b.txt", "doc.docx", "fm.md", "latin1.txt", "page.html",
        "paper.pdf", "sub/deep/r.rst", "plain.txt", "utf16.txt", NEWLINE_NAME}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "a").mkdir(parents=True)
    (root / "a-c").mkdir()
    (root / "sub" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    files = {
        "a/b.txt": b"in a\n",
        "a-c/x.txt": b"in a-c\n",
        "plain.txt": b"\n\n  First line of the plain file  \r\nsecond line\r\n",
        "a.md": b"Intro text.\n\n```sh\n# not a title\n```\n\n# Real Title\n\nBody.\n",
        "fm.md": (b"---\ntitle: Front Title\ndate: 2020-05-01\nauthors: [Ann, Bo]\n---\n"
                  b"# Heading One\n\nSome body text.\n"),
        "sub/deep/r.rst": b"=========\nRST Title\n=========\n\nIntro.\n\nPart\n----\n\nText.\n",
        "page.html": (b"<html><head><title>The Page</title><meta name='author' content='Cy'>"
                      b"<meta name='date' content='2021-02-03'></head><body><h1>Head</h1>"
                      b"<p>Para <b>bold</b> text.</p><script>var x=1;</script></body></html>"),
        "paper.pdf": make_pdf(["Hello PDF world", "Second line"], title="PDF Meta Title",
                              author="Ada", date="D:20200102030405Z"),
        "doc.docx": make_docx([("Heading1", "Docx Heading"), ("", "Docx body text.")],
                              creator="Dee"),
        "latin1.txt": "Café crème brûlée, naïve façade.\n".encode("latin-1"),
        "utf16.txt": "UTF-16 wörld\n".encode("utf-16"),
        NEWLINE_NAME: "Über notes\n".encode(),
        "empty.txt": b"",
        "blank.md": b"  \n\n\t\n",
        "binary.txt": bytes(range(256)) * 4,
        "noise.txt": bytes([1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16]) * 40,
        "thing.xyz": b"whatever",
        "Makefile": b"all:\n",
        "corrupt.pdf": b"%PDF-1.4\nthis is not really a pdf\n",
        "corrupt.docx": b"PK\x03\x04 not a zip",
        ".hidden.txt": b"secret",
        ".git/config.txt": b"secret",
        "locked.txt": b"you cannot read me",
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.symlink("..", root / "sub" / "up")  # symlinked folder -> its grandparent
    os.symlink("loop2", root / "loop1.txt")
    os.symlink("loop1.txt", root / "loop2")
    os.symlink("missing.txt", root / "broken.txt")
    os.symlink("plain.txt", root / "link.txt")  # symlinked file: followed
    os.mkfifo(root / "pipe.txt")
    with open(root / "huge.txt", "wb") as fh:  # sparse: 200 MB on paper, nothing on disk
        fh.truncate(200_000_000)
    (root / "locked.txt").chmod(0)
    return root


def run(root: Path, **kw) -> dict[str, Document | SkippedFile]:
    out = list(iter_documents(root, **kw))
    by_path = {item.path: item for item in out}
    assert len(by_path) == len(out), "each path reported once"
    return by_path


def test_good_documents_all_read(corpus):
    got = run(corpus)
    docs = {p for p, item in got.items() if isinstance(item, Document)}
    expected = GOOD | {"link.txt"} | ({"locked.txt"} if os.geteuid() == 0 else set())
    assert docs == expected
    for path in docs:
        doc = got[path]
        assert doc.text == ids.normalise_text(doc.text)
        assert doc.doc_id == ids.doc_id(doc.text)
        assert doc.text and doc.title


def test_skip_reasons(corpus):
    got = run(corpus)
    reason = {p: item.reason for p, item in got.items() if isinstance(item, SkippedFile)}
    assert reason["empty.txt"] == "empty"
    assert reason["blank.md"] == "empty"
    assert reason["binary.txt"] == "binary content"
    assert reason["noise.txt"] == "binary content"
    assert reason["thing.xyz"] == "unsupported format '.xyz'"
    assert reason["Makefile"] == "unsupported format (no extension)"
    assert reason["corrupt.pdf"].startswith("PDF could not be converted: PDFSyntaxError: ")
    assert reason["corrupt.docx"].startswith("DOCX could not be converted: BadZipFile: ")
    assert reason["sub/up"] == "symlink to a folder (not followed)"
    assert reason["loop1.txt"] == reason["loop2"] == "symlink loop"
    assert reason["broken.txt"] == "broken symlink"
    assert reason["pipe.txt"] == "not a regular file"
    assert reason["huge.txt"] == "too large (200.0 MB > 50.0 MB limit)"
    if os.geteuid() != 0:  # root can read a chmod-000 file
        assert reason["locked.txt"] == "unreadable: Permission denied"
    assert not any(p.startswith(".") or "/." in p for p in got), "hidden files are silent"


def test_titles_text_and_meta(corpus):
    got = run(corpus)
    plain = got["plain.txt"]
    assert (plain.fmt, plain.title) == ("text", "First line of the plain file")
    assert plain.text == "First line of the plain file\nsecond line"
    assert got["a.md"].title == "Real Title"  # not the '# comment' in the code fence
    fm = got["fm.md"]
    assert fm.fmt == "markdown" and fm.title == "Front Title"
    assert fm.text == "# Heading One\n\nSome body text."
    assert fm.meta == (("author", "Ann, Bo"), ("date", "2020-05-01"))
    rst = got["sub/deep/r.rst"]
    assert (rst.fmt, rst.title) == ("rst", "RST Title")
    html = got["page.html"]
    assert (html.fmt, html.title) == ("markdown", "The Page")
    assert "# Head" in html.text and "**bold**" in html.text and "var x" not in html.text
    assert html.meta == (("author", "Cy"), ("date", "2021-02-03"))
    pdf = got["paper.pdf"]
    assert (pdf.fmt, pdf.title) == ("markdown", "PDF Meta Title")
    assert pdf.text == "Hello PDF world\nSecond line"
    assert pdf.meta == (("author", "Ada"), ("date", "2020-01-02"))
    docx = got["doc.docx"]
    assert docx.title == "Docx Heading"
    assert docx.text == "# Docx Heading\n\nDocx body text."
    assert docx.meta == (("author", "Dee"), ("date", "2019-03-04"))
    assert got["latin1.txt"].text == "Café crème brûlée, naïve façade."
    assert got["utf16.txt"].text == "UTF-16 wörld"
    assert got[NEWLINE_NAME].title == "Über notes"
    assert got["link.txt"].doc_id == plain.doc_id


def test_stable_sorted_order(corpus):
    first = [item.path for item in iter_documents(corpus)]
    assert first == sorted(first)
    assert first == [item.path for item in iter_documents(corpus)]
    # 'a-c/..' < 'a.md' < 'a/..' in code point order
    assert first.index("a-c/x.txt") < first.index("a.md") < first.index("a/b.txt")


def test_is_a_lazy_generator(corpus, monkeypatch):
    calls = []
    real = reader.read_file
    monkeypatch.setattr(reader, "read_file", lambda *a: calls.append(a[1]) or real(*a))
    it = iter_documents(corpus)
    assert next(it).path == "Makefile"
    assert calls == ["Makefile"]  # nothing else has been read yet
    assert next(it).path == "a-c/x.txt"
    assert calls == ["Makefile", "a-c/x.txt"]


def test_unreadable_file_even_as_root(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("locked")
    (tmp_path / "b.txt").write_text("fine")
    real_open = open

    def fake_open(path, *a, **kw):
        if str(path).endswith("a.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(reader, "open", fake_open, raising=False)
    got = run(tmp_path)
    assert got["a.txt"].reason == "unreadable: Permission denied"
    assert got["b.txt"].text == "fine"


def test_rename_keeps_doc_id_and_pdf_title_fallback(tmp_path):
    (tmp_path / "one.txt").write_text("Same content.\n")
    before = run(tmp_path)["one.txt"].doc_id
    (tmp_path / "one.txt").rename(tmp_path / "two.txt")
    (tmp_path / "x.pdf").write_bytes(make_pdf(["  ", "First real line"]))
    got = run(tmp_path)
    assert got["two.txt"].doc_id == before
    assert got["x.pdf"].title == "First real line" and got["x.pdf"].meta == ()


def test_max_bytes_and_bad_front_matter(tmp_path):
    (tmp_path / "big.txt").write_text("x" * 2000)
    (tmp_path / "bad.md").write_text("---\ntitle: [unclosed\n---\nBody\n")
    got = run(tmp_path, max_bytes=1000)
    assert got["big.txt"].reason == "too large (2.0 kB > 1.0 kB limit)"
    assert got["bad.md"].text == "---\ntitle: [unclosed\n---\nBody"
    assert got["bad.md"].meta == () and got["bad.md"].title == "bad"


def test_one_crashing_file_does_not_stop_the_run(tmp_path, monkeypatch):
    (tmp_path / "a.html").write_text("<title>t</title><p>x</p>")
    (tmp_path / "b.txt").write_text("fine")

    def boom(html):
        raise RuntimeError("boom")

    monkeypatch.setattr(reader, "_html_meta", boom)
    got = run(tmp_path)
    assert got["a.html"].reason == "unexpected error: RuntimeError: boom"
    assert got["b.txt"].text == "fine"


def test_root_as_file_and_missing_root(tmp_path):
    (tmp_path / "solo.md").write_text("# Solo\n\ntext")
    [doc] = list(iter_documents(tmp_path / "solo.md"))
    assert (doc.path, doc.title) == ("solo.md", "Solo")
    with pytest.raises(FileNotFoundError):
        list(iter_documents(tmp_path / "nope"))
