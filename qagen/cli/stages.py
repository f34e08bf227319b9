"""``qagen stages``: the pipeline a run would execute with the current settings, stage by stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qagen.cli.common import errors, settings_or_exit
from qagen.cli.flags import (
    ConfigOpt,
    ProfileOpt,
    SetOpt,
    setting_flags,
    settings_command,
)
from qagen.cli.settings import resolve


def stages_cmd(
    ctx: typer.Context,
    docs: Annotated[Path | None, typer.Argument(help="The documents folder a run would read (its qagen.toml counts).")] = None,
    base_url: Annotated[list[str] | None, typer.Option(help="As for qagen ingest: a served model picks the served profile.")] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Folder of prompt files, as for qagen ingest.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the stages `qagen ingest` would run with these settings: read, chunk, generate (the suite's
    perspectives and the fact ledger), the per-pair steps, curation, export and the writers."""
    from qagen.cli.flags import daily_flags
    from qagen.generate.answer_first import CLOZE_OUTPUT, QUESTION_OUTPUT
    from qagen.pipeline.assemble import chunker_settings, curation_plan, pair_step_plan
    from qagen.pipeline.finish import WRITERS
    from qagen.prompting.prompts import load_prompts

    flags = {**setting_flags(ctx), **daily_flags(base_url=base_url)}
    settings = settings_or_exit(lambda: resolve(docs=docs, config=config, profile=profile, sets=set_ or (),
                                                flags=flags).settings, as_json)
    with errors(as_json):
        ps = load_prompts(prompts, settings.refine_style, settings.prompt_switches, settings.perspective_suite)
    chunking = chunker_settings(settings)
    ledger = [p.id for p in ps.all if p.enabled and p.output in (CLOZE_OUTPUT, QUESTION_OUTPUT, "spans")]
    identity = next((p for p in ps.all if p.id == "identity" and p.enabled), None)
    perspectives = [f"{p.id}" + (f" x{p.samples}" if p.samples > 1 else "") for p in ps.perspectives
                    if p.role == "generator" and p.id not in ledger]
    plan: list[tuple[str, list[tuple[str, str]]]] = [
        ("read", [("documents", f"{docs or 'DOCS'}, recursively; symlinks leaving it "
                                + ("followed" if settings.follow_symlinks else "skipped") + "; OUT and qagen.toml left out")]),
        ("chunk", [("splitter", f"{chunking.chunk_size} tokens, {chunking.chunk_overlap} overlap")]),
        ("generate", [("suite", f"{settings.perspective_suite} (profile {settings.profile_name})"),
                      ("perspectives", ", ".join(perspectives) or "none"),
                      ("fact ledger", ", ".join(ledger) or "off"),
                      ("identity", "the documents' IDs and titles, built by code" if identity else "off"),
                      ("exam", "on: OUT/exam.jsonl, never trained on" if settings.exam_on else "off")]),
        ("per-pair steps", pair_step_plan(settings) or [("none", "drafts are stored as written")]),
        ("curate", curation_plan(settings)),
        ("export", [("train.jsonl, eval.jsonl", f"{settings.eval_fraction:.0%} held out by {settings.split_by}")]),
        ("writers", [(w.file or "train.jsonl", w.what) for w in WRITERS if w.wanted(settings, False)]
                    + ([("report.html, README.md", "the report and the dataset card")] if settings.report else [])),
    ]
    if as_json:
        print(json.dumps([{"stage": name, "steps": [{"name": n, "what": w} for n, w in steps]}
                          for name, steps in plan], ensure_ascii=False))
        return
    out = Console()
    for i, (name, steps) in enumerate(plan, 1):
        out.print(f"[bold]{i}. {name}[/bold]")
        for step, what in steps:
            out.print(f"   {step}: {what}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("stages", cls=settings_command("settings"))(stages_cmd)
