"""``qagen review OUT``: look at the pairs in a local page, fix them, rate them; ``--stats``, ``--calibrate`` and
``--export`` without the page. A thin wrapper over :mod:`qagen.review`; registered on the main app by
:func:`register`."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from qagen.cli.common import err, errors, require_out

if TYPE_CHECKING:
    from qagen.review.stats import Agreement
    from qagen.store import Store


def review_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder of `qagen ingest` (holds qagen.sqlite).")] = Path("qagen-out"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free one).", min=0, max=65535)] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL only; do not open a browser.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print how the judge's and the filters' verdicts agree "
                                        "with your ratings (precision and recall per check), then exit.")] = False,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Set the judge threshold from your ratings (at "
                                            "least 30 judged pairs; best balanced accuracy), then exit.")] = False,
    export: Annotated[bool, typer.Option("--export", help="Write train/eval.jsonl and dpo.jsonl again with your "
                                         "decisions, then exit (`qagen ingest` again does it too).")] = False,
    run: Annotated[int | None, typer.Option(help="Run id (default: the latest finished ingest run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="--stats/--calibrate/--export: one JSON object on stdout.")] = False,
) -> None:
    """Review a run's pairs in a local page: accept, reject, edit, rescue a dropped one. Decisions are kept in
    the state database and applied by every export."""
    from qagen.output.report import latest_run
    from qagen.store import Store

    require_out(out, as_json)
    with errors(as_json), Store(out) as store:
        run_id = run if run is not None else latest_run(store)
        if stats or calibrate or export:
            _offline(store, run_id, out, stats=stats, calibrate=calibrate, export=export, as_json=as_json)
            return
        _serve(store, run_id, port, no_browser)


def _serve(store: Store, run_id: int, port: int, no_browser: bool) -> None:
    from qagen.config import has_display
    from qagen.review.server import ReviewServer

    server = ReviewServer(store, run_id, port=port)
    print(server.url, flush=True)  # the one thing a script needs (it holds the token)
    err.print(f"reviewing run {run_id}; press Ctrl-C to stop. Decisions are saved as you make them.")
    if not no_browser and has_display():  # headless: the URL above is the way in (no console browser started)
        try:
            webbrowser.open(server.url)
        except webbrowser.Error:
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped. Run `qagen ingest` again (or `qagen review OUT --export`) to export with your decisions.")
    finally:
        server.close()


def _offline(store: Store, run_id: int, out: Path, *, stats: bool, calibrate: bool, export: bool,
             as_json: bool) -> None:
    from qagen.review import stats as review_stats

    result: dict[str, object] = {"run_id": run_id}
    if stats:
        rows = review_stats.agreement(store, run_id)
        result["judge_threshold"] = review_stats.judge_threshold(store, run_id)
        result["checks"] = [r.to_dict() for r in rows]
        if not as_json:
            _print_stats(rows, result["judge_threshold"])
    if calibrate:
        cal = review_stats.calibrate(store, run_id)
        result["calibration"] = {"threshold": cal.threshold, "balanced_accuracy": cal.balanced_accuracy,
                                 "current": cal.current, "current_balanced_accuracy": cal.current_balanced_accuracy,
                                 "rated": cal.rated}
        if not as_json:
            err.print(f"judge threshold from {cal.rated} rated pairs: [bold]{cal.threshold}[/bold] (balanced accuracy "
                      f"{cal.balanced_accuracy:.2f}; the run's {cal.current} scores {cal.current_balanced_accuracy:.2f}). "
                      f"Use it: qagen ingest ... --judge --judge-threshold {cal.threshold}")
    if export:
        result["export"] = _export(store, run_id, out)
        if not as_json:
            e = result["export"]
            err.print(f"dataset written again with your decisions: {e['train_pairs']} train, {e['eval_pairs']} eval "
                      f"pairs, {e['dpo_pairs']} preference pairs in {e['dpo_path']}")  # type: ignore[index]
    if as_json:
        print(json.dumps(result, ensure_ascii=False))


def _export(store: Store, run_id: int, out: Path) -> dict[str, object]:
    from qagen.core import ids
    from qagen.output.atomic import output_unit
    from qagen.output.export import export_dpo, export_run

    record = store.run_record(run_id)
    settings = record.settings if record else {}
    group_id = ids.group_id(store.run_doc_ids(run_id))
    with output_unit() as unit:  # train, eval and dpo replaced together, or not at all
        done = export_run(store, run_id, out, group_id, eval_fraction=float(settings.get("eval_fraction", 0.1)),  # type: ignore[arg-type]
                          split_by=str(settings.get("split_by", "auto")))
        dpo_path, dpo_pairs = export_dpo(store, run_id, out, group_id)
        unit.commit()
    return {"train_pairs": done.train_pairs, "eval_pairs": done.eval_pairs, "dpo_pairs": dpo_pairs,
            "dpo_path": str(dpo_path), "review": store.review_counts(run_id)}


def _print_stats(rows: list[Agreement], threshold: object) -> None:
    table = Table(title=f"checks vs. the human (judge threshold {threshold}; an edited pair counts as rejected)")
    for col in ("check", "rated", "TP", "FP", "FN", "TN", "precision", "recall"):
        table.add_column(col, justify="left" if col == "check" else "right")
    for r in rows:
        pct = [("–" if v is None else f"{100 * v:.0f}%") for v in (r.precision, r.recall)]
        table.add_row(r.check, str(r.rated), str(r.tp), str(r.fp), str(r.fn), str(r.tn), *pct)
    err.print(table if rows else "no rated pairs yet: rate some in `qagen review OUT`")


def register(app: typer.Typer) -> None:
    app.command("review")(review_cmd)
