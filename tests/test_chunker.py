"""Chunker: heading paths, sizes and overlap in the chosen unit, stable IDs."""

from __future__ import annotations

import math
import time

import pytest

from qagen.core import ids
from qagen.core.types import Document
from qagen.corpus.chunker import (
    Chunker,
    ChunkerSettings,
    rst_to_markdown,
    split_sections,
)


def make_doc(text: str, fmt: str = "markdown", title: str = "T") -> Document:
    text = ids.normalise_text(text)
    return Document(doc_id=ids.doc_id(text), path="x", title=title, text=text, fmt=fmt)


MD = """# Alpha

Alpha body.

```python
# a comment, not a heading
x = 1
```

## Beta

Beta body.

### Gamma

Gamma body.

##### Too deep to split

Still Gamma.

## Delta

Delta body.

# Epsilon

Epsilon body.
"""


def test_markdown_section_paths():
    sections = split_sections(MD)
    assert [s for s, _ in sections] == [
        "Alpha", "Alpha > Beta", "Alpha > Beta > Gamma", "Alpha > Delta", "Epsilon"]
    assert sections[0][1].startswith("# Alpha\n\nAlpha body.\n\n```python\n# a comment")
    assert sections[2][1] == (
        "### Gamma\n\nGamma body.\n\n##### Too deep to split\n\nStill Gamma.")


def test_small_sections_are_packed_up_to_chunk_size():
    # Each section is ~10 estimated tokens: a 25-token budget packs them two or three at a time.
    chunks = Chunker(ChunkerSettings(chunk_size=25, chunk_overlap=0)).chunk(make_doc(MD, title="Doc"))
    assert 1 < len(chunks) < 5
    assert all(c.n_tokens <= 25 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {c.title for c in chunks} == {"Doc"}
    assert chunks[0].section.startswith("Alpha")
    assert "Epsilon body." in chunks[-1].text
    # one big budget: everything in one chunk labelled by the first section
    (single,) = Chunker(ChunkerSettings(chunk_size=1000, chunk_overlap=0)).chunk(make_doc(MD, title="Doc"))
    assert single.section == "Alpha" and "Delta body." in single.text


def test_heading_labels_drop_link_syntax():
    md = "# [`copy`](#module-copy \"x\") \u2014 Shallow copies[\u00b6](#p \"Permalink\")\n\nBody text here."
    (chunk,) = Chunker(ChunkerSettings()).chunk(make_doc(md, title="Doc"))
    assert chunk.section == "copy \u2014 Shallow copies"


def test_heading_without_body_joins_next_section():
    assert split_sections("# Title\n\n## Intro\n\nBody.") == [
        ("Title > Intro", "# Title\n\n## Intro\n\nBody.")]
    assert split_sections("No heading.\n\n#hashtag is not one") == [
        ("", "No heading.\n\n#hashtag is not one")]


def test_plain_text_has_no_sections():
    chunks = Chunker().chunk(make_doc("# not a heading\n\nbody", fmt="text"))
    assert [(c.section, c.text) for c in chunks] == [("", "# not a heading\n\nbody")]


RST = """=======
Manual
=======

Intro.

Install
=======

Run it.

Details
-------

Small print.

Usage
=====

Use it.
"""


def test_rst_headings_converted():
    assert rst_to_markdown(RST) == (
        "# Manual\n\nIntro.\n\n## Install\n\nRun it.\n\n### Details\n\nSmall print.\n\n"
        "## Usage\n\nUse it.\n")
    assert [s for s, _ in split_sections(rst_to_markdown(RST))] == [
        "Manual", "Manual > Install", "Manual > Install > Details", "Manual > Usage"]
    # small enough to pack into one chunk, labelled by the first section
    (chunk,) = Chunker().chunk(make_doc(RST, fmt="rst"))
    assert chunk.section == "Manual" and chunk.text.startswith("# Manual") and "Use it." in chunk.text
    # indented lines and short underlines are not titles
    assert rst_to_markdown("Text\n\n  inset\n  -----\n\nLong title\n---\n") == (
        "Text\n\n  inset\n  -----\n\nLong title\n---\n")


WORDS = [f"w{i:04d}" for i in range(2000)]


def test_size_and_overlap_in_estimated_tokens():
    chunker = Chunker(ChunkerSettings(chunk_size=50, chunk_overlap=10))
    assert chunker.unit == "estimated tokens (chars/4, no tokenizer)"
    chunks = chunker.chunk(make_doc(" ".join(WORDS), fmt="text"))
    assert len(chunks) > 60
    for c in chunks:
        assert c.n_tokens == math.ceil(len(c.text) / 4) == chunker.length(c.text)
        assert c.n_tokens <= 50
        assert c.n_tokens >= 40  # words are packed, not one per chunk
    for prev, nxt in zip(chunks, chunks[1:]):
        a, b = prev.text.split(), nxt.text.split()
        shared = next(k for k in range(len(b), -1, -1) if a[len(a) - k:] == b[:k])
        assert shared >= 1, "consecutive chunks overlap"
        assert chunker.length(" ".join(b[:shared])) <= 10
    seen = [w for c in chunks for w in c.text.split()]
    assert sorted(set(seen)) == WORDS  # nothing lost


def test_long_word_is_cut_to_size():
    chunks = Chunker(ChunkerSettings(chunk_size=25, chunk_overlap=0)).chunk(
        make_doc("a" * 90 + "b" * 90, fmt="text"))
    assert [c.n_tokens for c in chunks] == [25, 20]
    assert "".join(c.text for c in chunks) == "a" * 90 + "b" * 90


def test_chunk_ids_pinned_and_stable():
    doc = make_doc("# Head\n\nSome text here.")
    assert ChunkerSettings().key() == (
        '{"chunk_overlap":100,"chunk_size":1000,"chunker":1,"tokenizer":null}')
    [c] = Chunker().chunk(doc)
    key = ChunkerSettings().key()
    assert c.chunk_id == ids.chunk_id(doc.doc_id, "# Head\n\nSome text here.", key)
    assert c.chunk_id == "fa088e33632c0e42c021cbf18eb3621a"
    assert Chunker().chunk(doc) == [c]


def test_chunk_ids_change_with_settings():
    doc = make_doc(MD)
    base = [c.chunk_id for c in Chunker(ChunkerSettings()).chunk(doc)]
    for other in (ChunkerSettings(chunk_size=999), ChunkerSettings(chunk_overlap=99)):
        assert set(base).isdisjoint(c.chunk_id for c in Chunker(other).chunk(doc))
    keys = {ChunkerSettings().key(), ChunkerSettings(tokenizer="tok.json").key(),
            ChunkerSettings(chunk_size=999).key(), ChunkerSettings(chunk_overlap=99).key()}
    assert len(keys) == 4


def test_duplicate_chunks_are_dropped():
    chunks = Chunker(ChunkerSettings(chunk_size=6, chunk_overlap=0)).chunk(
        make_doc("same paragraph here\n\nsame paragraph here\n\nother one", fmt="text"))
    assert [c.text for c in chunks] == ["same paragraph here", "other one"]
    assert [c.index for c in chunks] == [0, 1]


@pytest.mark.parametrize("kwargs", [
    {"chunk_size": 0}, {"chunk_size": -5}, {"chunk_overlap": -1},
    {"chunk_size": 100, "chunk_overlap": 100}, {"chunk_size": 100, "chunk_overlap": 150},
    {"chunk_size": "100"}, {"chunk_size": 10.5}, {"chunk_size": True},
])
def test_invalid_settings_raise(kwargs):
    with pytest.raises(ValueError, match="chunk_size|chunk_overlap"):
        ChunkerSettings(**kwargs)


def test_empty_tokenizer_means_none():
    assert ChunkerSettings(tokenizer=" ") == ChunkerSettings()
    assert ChunkerSettings(tokenizer="").key() == ChunkerSettings().key()


def test_missing_tokenizer_gives_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Chunker(ChunkerSettings(tokenizer=str(tmp_path / "nope.json")))
    with pytest.raises(ValueError, match="pip install|local files"):
        Chunker(ChunkerSettings(tokenizer="no-such-org/no-such-model"))


def test_tokenizer_json_counts_real_tokens(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    chunker = Chunker(ChunkerSettings(chunk_size=30, chunk_overlap=5, tokenizer=str(path)))
    assert chunker.unit == f"tokens ({path})"
    chunks = chunker.chunk(make_doc(" ".join(WORDS[:300]), fmt="text"))
    for c in chunks:
        assert c.n_tokens == len(c.text.split()) <= 30
    assert len(chunks) >= 300 // 30
    # a folder holding tokenizer.json works too
    assert Chunker(ChunkerSettings(tokenizer=str(tmp_path))).length("w0001 w0002 zzz") == 3


def test_big_markdown_is_fast():
    para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod. " * 6
    parts = []
    for i in range(6000):
        if i % 25 == 0:
            parts.append(f"## Section {i}")
        parts.append(f"{i} {para}")
    doc = make_doc("# Big\n\n" + "\n\n".join(parts))
    blob = make_doc("x" * 1_000_000 + "\n\n" + "y" * 1_000_000, fmt="text")
    start = time.perf_counter()
    chunks = Chunker().chunk(doc)
    blob_chunks = Chunker().chunk(blob)
    elapsed = time.perf_counter() - start
    assert len(doc.text) > 2_500_000
    assert len(chunks) > len(doc.text) // 4000
    assert max(c.n_tokens for c in chunks + blob_chunks) <= 1000
    # 1M 'x' cut into 250 windows that are identical but for the last: 2 distinct chunks
    assert [c.text[0] for c in blob_chunks] == ["x", "x", "y", "y", "y"]
    assert elapsed < 20, f"chunking took {elapsed:.1f}s"
