"""``augforge report DIR``: rebuild report.md, leaderboard.csv and the figures of a study folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from augforge.errors import UsageError

if TYPE_CHECKING:  # the harness pulls in torch and scipy: import it only when a command runs
    from augforge.bench.ranking import Leaderboard


def print_leaderboard(board: Leaderboard, console: Console) -> None:
    """The leaderboard as a rich table: rank, strategy, Dice with CI, delta and Holm p vs baseline."""
    from augforge.bench.stats import fmt_p

    if not board.rows:
        console.print("no finished trials: nothing to rank", markup=False)
        return
    for ctx in board.contexts:
        rows = [r for r in board.rows if r.context == ctx]
        table = Table(title=f"leaderboard ({board.context_name(ctx)})", title_justify="left")
        table.add_column("#", justify="right", no_wrap=True, min_width=2)
        table.add_column("strategy", overflow="fold", min_width=12)
        table.add_column("n", justify="right", no_wrap=True, min_width=1)  # trials (seeds) finished
        table.add_column("Dice [95% CI]", justify="right", no_wrap=True)
        table.add_column("Δ none", justify="right", no_wrap=True)
        table.add_column("p Holm", justify="right", no_wrap=True)
        table.add_column("", min_width=8)
        for r in rows:
            c = r.vs_baseline
            mark = (
                "baseline"
                if r.is_baseline
                else (
                    ""
                    if c is None or r.significant
                    else "n.s. (one seed)"
                    if r.one_seed
                    else "n.s. (images only)"
                    if r.images_only
                    else "n.s."
                )
            )
            if r.beats_floor is False:  # the network earned nothing a fixed rule does not score
                mark = f"{mark}; NOT ABOVE FLOOR" if mark else "NOT ABOVE FLOOR"
            table.add_row(
                str(r.rank),
                r.strategy,
                str(r.n_trials),
                f"{r.dice.mean:.3f} [{r.dice.low:.3f}, {r.dice.high:.3f}]",
                "-" if c is None else f"{c.delta:+.3f}",
                "-" if c is None else fmt_p(r.p_value),
                mark,
            )
        for f in board.floors.get(ctx, []):
            table.add_row(
                "-",
                f"{f.kind}: {f.name}{' (best)' if f.best else ''}",
                "-",
                f"{f.dice.mean:.3f} [{f.dice.low:.3f}, {f.dice.high:.3f}]",
                "-",
                "-",
                "learns nothing" if f.best else ("readers agree" if f.kind == "ceiling" else ""),
            )
        console.print(table)
    if board.shift:
        table = Table(title="at the held-out scanner site (same test slices)", title_justify="left")
        for name, justify in (("strategy", "left"), ("in-domain", "right"), ("held-out [95% CI]", "right")):
            table.add_column(name, justify=justify, overflow="fold")
        for name in ("gap", "Δ none", ""):
            table.add_column(name, justify="right" if name else "left", no_wrap=True)
        for r in board.shift:
            c = r.vs_baseline
            mark = "baseline" if r.is_baseline else ("" if c is None or r.significant else "n.s.")
            table.add_row(
                r.strategy,
                f"{r.in_domain.mean:.3f}",
                f"{r.shifted.mean:.3f} [{r.shifted.low:.3f}, {r.shifted.high:.3f}]",
                f"{r.gap.delta:+.3f}",
                "-" if c is None else f"{c.delta:+.3f}",
                mark,
            )
        console.print(table)
    for note in board.notes:
        console.print(f"note: {note}", markup=False)
    if any(r.one_seed for r in board.rows):
        console.print(
            "note: one seed: no difference is called, since a single training run per strategy cannot show "
            "that another run would agree; add --seeds 3 to test the differences",
            markup=False,
        )
    if board.failed:
        console.print(f"{len(board.failed)} trial(s) failed; see the report and run.log", markup=False)


def report_cmd(
    folder: Annotated[Path, typer.Argument(help="A study folder written by `augforge bench` (holds trials.jsonl).")],
) -> None:
    """Rebuild report.md, leaderboard.csv and figures/ of a study folder from its stored results."""
    from augforge.bench.report import write_report
    from augforge.bench.store import ResultsStore

    if not (folder / "trials.jsonl").is_file():
        raise UsageError(f"{folder}: no trials.jsonl here; give the --out folder of an `augforge bench` run")
    store = ResultsStore(folder)
    with store.lock():  # not while a bench run writes the same folder
        store.load()
        board = write_report(store)
    console = Console(highlight=False)
    print_leaderboard(board, console)
    console.print(f"report: {store.report_path}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
