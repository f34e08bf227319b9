"""Charts for the HTML report: matplotlib figures rendered to inline SVG strings.

Inline SVG keeps the page self-contained (no CDN script, no image files) and sharp at any zoom.
Text stays text (``svg.fonttype: none``), so the page is small and its labels searchable. Labels
come from documents (paths), so math-text parsing is off: a ``$`` in a file name is just a ``$``.
Figures are built with the object API (no pyplot global state) and a fixed hash salt, so the
same data gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

from qagen.core.records import VERDICT_SOURCES
from qagen.output.report_data import Histogram, ReportData

EXPORTED, DROPPED, ACCENT = "#2b6cb0", "#d69e2e", "#c53030"
RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "qagen-report",
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _svg(draw: Callable[[Axes], None], width: float = 6.0, height: float = 2.6) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        draw(fig.add_subplot())
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: the page is HTML


def _bars(labels: list[str], series: list[tuple[str, list[float], str]], xlabel: str) -> Callable[[Axes], None]:
    """Horizontal stacked bars, one row per label (long labels read better sideways)."""

    def draw(ax: Axes) -> None:
        left = [0.0] * len(labels)
        ys = list(range(len(labels)))
        for name, values, color in series:
            ax.barh(ys, values, left=left, color=color, label=name)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_yticks(ys, labels=[lbl if len(lbl) <= 48 else "..." + lbl[-45:] for lbl in labels])
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        if len(series) > 1:
            ax.legend(loc="lower right", frameon=False)

    return draw


def _histogram(hist: Histogram, xlabel: str, threshold: float | None = None) -> Callable[[Axes], None]:
    """Bars of counts binned already (in SQL): one weighted value at the centre of each bin."""
    centres = [(a + b) / 2 for a, b in zip(hist.edges[:-1], hist.edges[1:], strict=True)]

    def draw(ax: Axes) -> None:
        ax.hist(centres, bins=hist.edges, weights=hist.counts, color=EXPORTED, edgecolor="white")
        if threshold is not None:
            ax.axvline(threshold, color=ACCENT, linestyle="--", label=f"threshold {threshold:g}")
            ax.legend(frameon=False)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs")

    return draw


def _counts(hist: dict[int, int], xlabel: str) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        keys = sorted(hist)
        ax.bar([str(k) for k in keys], [hist[k] for k in keys], color=EXPORTED)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs")

    return draw


def _height(n: int) -> float:
    return max(1.6, 0.6 + 0.24 * n)


def charts_for(data: ReportData) -> dict[str, str]:
    """Chart name -> inline SVG. A chart with nothing to show is left out (the page says why)."""
    charts: dict[str, str] = {}
    docs = data.top_documents  # the documents with most pairs, from all of the run's (the table is capped)
    if docs:
        charts["documents"] = _svg(
            _bars([d.path for d in docs], [("exported", [d.exported for d in docs], EXPORTED),
                                           ("thrown away", [d.generated - d.exported for d in docs], DROPPED)],
                  "pairs per document"), height=_height(len(docs)))
    ps = data.perspectives
    if ps:
        charts["perspectives"] = _svg(
            _bars([p.name for p in ps], [("exported", [p.exported for p in ps], EXPORTED),
                                         ("thrown away", [p.generated - p.exported for p in ps], DROPPED)],
                  "pairs per perspective"), height=_height(len(ps)))
    kept = {k: v for k, v in data.verdict_counts.items() if v}
    if kept:
        names = list(kept)
        labels = [f"{n} ({VERDICT_SOURCES[n]})" if n in VERDICT_SOURCES else n for n in names]
        charts["verdicts"] = _svg(
            _bars(labels, [("pairs", [kept[n] for n in names], EXPORTED)], "pairs by verdict (and the gate)"),
            height=_height(len(names)))
    if data.judge_scored:
        charts["judge"] = _svg(_histogram(data.judge_hist, "judge score (P(yes))", data.judge_threshold))
    if data.rounds_histogram:
        charts["rounds"] = _svg(_counts(data.rounds_histogram, "critic rounds per pair"), width=4.0)
    if data.exported_count:
        charts["question_lengths"] = _svg(_histogram(data.question_lengths, "question length (chars)"), width=4.2)
        charts["answer_lengths"] = _svg(_histogram(data.answer_lengths, "answer length (chars)"), width=4.2)
    return charts
