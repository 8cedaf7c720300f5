"""The study report: leaderboard.csv, report.md and its figures, rebuilt from the stored results."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from augforge.bench.curves import curve_rows, learning_curve_figure, subsample_unit
from augforge.bench.figures import sample_grid_path, write_figures
from augforge.bench.ranking import (
    LEADERBOARD_COLUMNS,
    FloorRow,
    Leaderboard,
    _flatten,
    build_leaderboard,
    shift_table,
    trial_context,
)
from augforge.bench.stats import ALPHA, fmt_p
from augforge.bench.store import ResultsStore
from augforge.fileio import atomic_write_text

__all__ = ["leaderboard_csv", "render_markdown", "write_report"]


def leaderboard_csv(board: Leaderboard) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LEADERBOARD_COLUMNS)
    for ctx in board.contexts:  # each context's strategies, then its floors (rank "floor")
        for r in board.rows:
            if r.context == ctx:
                w.writerow(r.csv_row())
        for f in board.floors.get(ctx, []):
            w.writerow(f.csv_row())
    return buf.getvalue()


def floor_mark(beats: bool | None) -> str:
    """The leaderboard's word on a strategy against the best floor."""
    return "-" if beats is None else ("above" if beats else "**not above**")


def _f(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def _cost_line(recs: list[dict[str, Any]]) -> str:
    """Compute time of the finished trials (their wall times added up) and the calendar span from the
    first start to the last finish, which includes any pause of a resumed study."""
    total = sum(float(r.get("timings_s", {}).get("total", 0.0)) for r in recs)
    line = f"- wall time: {_duration(total)} of trials ({total / max(len(recs), 1):.0f} s per trial on average)"
    try:
        start = min(_dt.datetime.fromisoformat(r["started_at"]) for r in recs)
        end = max(_dt.datetime.fromisoformat(r["finished_at"]) for r in recs)
    except (KeyError, TypeError, ValueError):
        return line
    return line + (
        f"; first trial started {start:%Y-%m-%d %H:%M}, last finished {end:%Y-%m-%d %H:%M} UTC "
        "(a resumed study's span includes its pauses)"
    )


def preset_overrides(recs: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Per preset name: each setting whose value in the trials differs from the preset's own
    (``--set`` and study-file overrides, a ``--data`` path), with the values the trials used.

    Settings a record does not carry (added later, at their earlier behaviour) count as the preset's;
    a preset this installation does not know is left out."""
    from augforge.config import get_preset
    from augforge.errors import UsageError

    out: dict[str, dict[str, list[str]]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    for rec in recs:
        preset = str(rec.get("preset", ""))
        if preset not in defaults:
            try:
                flat: dict[str, Any] = {}
                _flatten("", get_preset(preset).to_dict(), flat)
            except UsageError:
                flat = {}
            defaults[preset] = flat
        if not defaults[preset]:
            continue
        settings: dict[str, Any] = {}
        _flatten("", rec.get("config", {}).get("settings", {}), settings)
        changed = out.setdefault(preset, {})
        for key, value in settings.items():
            if key in defaults[preset] and value != defaults[preset][key]:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                if text not in changed.setdefault(key, []):
                    changed[key].append(text)
    return out


def _context_heading(ctx: tuple[float, str, str], recs: list[dict[str, Any]]) -> str:
    frac, preset, fp = ctx
    sizes = {r.get("training", {}).get("n_real") for r in recs if trial_context(r) == ctx}
    n = f" ({sizes.pop()} real training slices)" if len(sizes) == 1 and None not in sizes else ""
    return f"Train fraction {frac:g}{n}, preset {preset}, dataset {fp}"


def _name(row: Any) -> str:
    """A leaderboard row's name in the tables: `strategy`, or *floor: name*."""
    return f"*{row.kind}: {row.name}*" if isinstance(row, FloorRow) else f"`{row.strategy}`"


def _per_seed_section(board: Leaderboard) -> list[str]:
    """Mean Dice of each training run: how far one run (all a single-run study has) can move."""
    seeds = sorted({int(r["seed"]) for r in board.records})
    if len(seeds) < 2:
        return []
    by_key = {(r["strategy"], trial_context(r), int(r["seed"])): float(r["metrics"]["dice"]) for r in board.records}
    body = []
    for row in board.rows:
        values = [by_key.get((row.label, row.context, s)) for s in seeds]
        got = [v for v in values if v is not None]
        spread = _f(max(got) - min(got)) if len(got) > 1 else "-"
        body.append([f"`{row.strategy}`", *[_f(v) if v is not None else "-" for v in values], spread])
    return [
        "## Dice per seed",
        "",
        (
            "Mean per-image Dice of each training run, and the spread between the "
            "best and the worst run of a strategy: a single run, as most papers "
            "report, is one of these numbers."
        ),
        "",
        *_table(["strategy", *[f"seed {s}" for s in seeds], "spread"], body),
        "",
    ]


def _shift_section(board: Leaderboard) -> list[str]:
    """The held-out scanner site: in-domain and shifted Dice, the gap, and each strategy against the
    baseline there (empty when no trial was scored at a held-out site)."""
    if not board.shift:
        return []
    lines = [
        "## At the held-out scanner site",
        "",
        (
            "The same test slices acquired by a second, held-out scanner (sharper kernel, more noise, "
            "thicker slices, another HU offset, larger patients; docs/data.md). No strategy saw that "
            "site. Gap: held-out minus in-domain Dice on the same images and seeds. Δ at the held-out "
            "site and its verdict use the leaderboard's tests (Holm across the table's strategies; no "
            "difference is called on one seed). Gap vs baseline: the strategy's gap minus the "
            "baseline's (positive: it loses less to the shift)."
        ),
        "",
    ]
    contexts = list(dict.fromkeys(s.context for s in board.shift))
    for ctx in contexts:
        body = []
        for s in (x for x in board.shift if x.context == ctx):
            if s.is_baseline or s.vs_baseline is None:
                delta, verdict, gap_vs = "-", "baseline" if s.is_baseline else "no baseline", "-"
            else:
                c = s.vs_baseline
                delta = f"{c.delta:+.3f} [{c.low:+.3f}, {c.high:+.3f}], p {fmt_p(max(s.p_adjusted, s.p_boot_adjusted))}"
                verdict = "significant" if s.significant else "**n.s.** (one seed)" if s.one_seed else "**n.s.**"
                g = s.gap_vs_baseline
                gap_vs = f"{g.delta:+.3f} [{g.low:+.3f}, {g.high:+.3f}]"
            g = s.gap
            body.append(
                [
                    f"`{s.strategy}`",
                    str(s.n_trials),
                    f"{s.in_domain.mean:.3f}",
                    f"{s.shifted.mean:.3f} [{s.shifted.low:.3f}, {s.shifted.high:.3f}]",
                    f"{g.delta:+.3f} [{g.low:+.3f}, {g.high:+.3f}]",
                    delta,
                    verdict,
                    gap_vs,
                ]
            )
        if len(contexts) > 1:
            recs = [r for r in board.records if trial_context(r) == ctx]
            lines += [f"### {_context_heading(ctx, recs)}", ""]
        header = ["strategy", "trials", "in-domain Dice", "held-out Dice [95% CI]", "gap [95% CI]"]
        lines += _table([*header, "Δ vs baseline at held-out site", "vs baseline", "gap vs baseline"], body)
        lines.append("")
    return lines


def render_markdown(
    board: Leaderboard, figures: dict[str, Path], root: Path, samples: dict[str, Path] | None = None
) -> str:
    """report.md: leaderboard with significance marks (one table per context), other metrics,
    per-class Dice, figures, a sample grid per strategy, failed trials and per-trial cost."""
    lines = ["# augforge benchmark report", ""]
    recs = board.records
    if recs:
        first = recs[0]
        versions = first.get("versions", {})
        seeds = sorted({r["seed"] for r in recs})
        lines += [
            f"- trials: {len(recs)} finished, {len(board.failed)} failed",
            f"- seeds: {', '.join(map(str, seeds))}",
            _cost_line(recs),
            (
                f"- device: {first.get('device', '?')} ({first.get('device_name', '')}"
                + (f", {first['cpu_capability']}" if first.get("cpu_capability") else "")
                + "), "
                f"torch {versions.get('torch', '?')}, augforge {versions.get('augforge', '?')}"
            ),
        ]
        caps = Counter(r["cpu_capability"] for r in recs if r.get("cpu_capability"))
        if len(caps) > 1:
            lines.append(
                "- CPU vector instructions differ across trials ("
                + ", ".join(f"{c}: {n}" for c, n in sorted(caps.items()))
                + "): a seed's numbers depend on them, so trials from both are samples of one setting, "
                "not reruns"
            )
        for ctx in board.contexts:
            name = next(r["dataset"]["name"] for r in recs if trial_context(r) == ctx)
            lines.append(f"- context: {board.context_name(ctx)} ({name})")
        lines += [
            f"- settings other than preset {preset}'s: "
            + ", ".join(f"{key} = {' or '.join(values)}" for key, values in changed.items())
            for preset, changed in preset_overrides(recs).items()
            if changed
        ]
        lines.append("")
    elif not board.failed:
        lines += ["No finished trials yet.", ""]

    if board.rows:
        lines += [
            "## Leaderboard",
            "",
            (
                "Mean per-image Dice over all test images and seeds, with a 95% hierarchical bootstrap "
                "interval (seeds, then images). Δ and p compare each strategy with the baseline `none` "
                "on the same images and seeds, by two tests, each Holm-adjusted across the strategies of its table: the "
                "Wilcoxon signed-rank test on the test images, and the two-level bootstrap, which also "
                "resamples the seeds. A difference is significant when both are below "
                f"{ALPHA}; p is the larger of the two. **n.s.** marks a difference not shown; "
                '"images only" means the test images shift consistently with the seeds run, but the '
                "shift is not established across training runs (the bootstrap over seeds): more seeds "
                "may settle it. With one seed no difference is called, whatever p says (**n.s.** (one seed)): "
                "both tests then see a single training run of each strategy, and another run, or the same "
                "seed on other hardware, can reverse the sign; run at least 2 seeds (`--seeds 3`). "
                '"vs next" says whether a strategy is separated from the one ranked just below '
                "it (same tests, Holm across the adjacent pairs). Method: docs/statistics.md."
            ),
            "",
            (
                "Below each table, the *floors*: predictors that learn nothing, scored on the same test "
                "images (an empty mask; a disk of the training tumours' median area at the image centre; "
                "the largest blob above -500 HU inside the lung field, or above the slice's Otsu threshold on data "
                'without Hounsfield units). "vs floor" says whether a '
                "strategy's Dice is above the best floor's (the 95% interval of the per-image difference "
                "lies above zero); **not above** means the network earned nothing a fixed rule does not "
                "already score. Floors have no seeds: their intervals are over images. Where the data "
                "have several readers, a *ceiling* row gives how well they agree: each reader's mask "
                "against the consensus of the others, per image, averaged over readers."
            ),
            "",
        ]
        body_by_ctx: dict[tuple, list[list[str]]] = {}
        for r in board.rows:
            body = body_by_ctx.setdefault(r.context, [])
            c = r.vs_baseline
            if r.is_baseline:
                mark, delta, p, eff = "baseline", "0", "-", "-"
            elif c is None:
                mark, delta, p, eff = "no baseline", "-", "-", "-"
            else:
                mark = (
                    "significant"
                    if r.significant
                    else "**n.s.** (one seed)"
                    if r.one_seed
                    else "**n.s.** (images only)"
                    if r.images_only
                    else "**n.s.**"
                )
                delta = f"{c.delta:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
                p = f"{fmt_p(r.p_value)} (Wilcoxon {fmt_p(r.p_adjusted)}, bootstrap {fmt_p(r.p_boot_adjusted)})"
                eff = f"{c.rank_biserial:+.2f}"
            nxt = "-" if r.vs_next is None else ("separated" if r.separated_from_next else "**n.s.**")
            body.append(
                [
                    str(r.rank),
                    f"`{r.strategy}`",
                    str(r.n_trials),
                    f"{r.dice.mean:.3f} [{r.dice.low:.3f}, {r.dice.high:.3f}]",
                    delta,
                    p,
                    eff,
                    mark,
                    nxt,
                    floor_mark(r.beats_floor),
                ]
            )
        for ctx, floors in board.floors.items():
            for f in floors:
                body_by_ctx.setdefault(ctx, []).append(
                    [
                        f.kind,
                        f"*{f.name}*" + (" (best)" if f.best else ""),
                        "-",
                        f"{f.dice.mean:.3f} [{f.dice.low:.3f}, {f.dice.high:.3f}]",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                    ]
                )
        header = [
            "rank",
            "strategy",
            "trials",
            "Dice [95% CI]",
            "Δ vs baseline [95% CI]",
            "p vs baseline (Holm)",
            "effect r",
            "vs baseline",
            "vs next",
            "vs floor",
        ]
        for ctx, body in body_by_ctx.items():
            if len(body_by_ctx) > 1:  # one table per context: ranks and comparisons are within one
                lines += [f"### {_context_heading(ctx, recs)}", ""]
            lines += _table(header, body)
            if len(body_by_ctx) > 1:
                lines.append("")
        lines += [
            "",
            (
                "Effect r: matched-pairs rank-biserial correlation of the per-image differences "
                "(+1: every image improved, -1: every image got worse)."
            ),
            "",
        ]
        lines += [f"Note: {n}" for n in board.notes] + ([""] if board.notes else [])
        lines += _shift_section(board)

        lines += [
            "## Other metrics",
            "",
            (
                "Means over test images and seeds (the paper's aggregate). HD95 is "
                "averaged over the images where it is defined (both masks "
                "non-empty)."
            ),
            "",
        ]
        # Floors depend on the dataset alone: once per dataset, not once per train fraction or preset.
        first_ctx = {}
        for ctx in board.contexts:
            first_ctx.setdefault(ctx[2], ctx)
        shown = [*board.rows, *(f for ctx in first_ctx.values() for f in board.floors.get(ctx, []))]
        lines += _table(
            ["strategy", "Dice", "IoU", "precision", "recall", "HD95 (mm)"],
            [
                [
                    _name(r),
                    _f(r.dice.mean),
                    _f(r.metrics["iou"]),
                    _f(r.metrics["precision"]),
                    _f(r.metrics["recall"]),
                    _f(r.metrics["hd95_mm"], 2),
                ]
                for r in shown
            ],
        )
        lines.append("")

        classes = sorted({c for r in board.rows for c in r.per_class})
        lines += ["## Dice per Lung-RADS class", ""]
        ns = {c: max(r.per_class.get(c, (0, 0.0))[0] for r in board.rows) for c in classes}
        lines += _table(
            ["strategy", *[f"{c} (n={ns[c]})" for c in classes]],
            [[_name(r), *[_f(r.per_class[c][1]) if c in r.per_class else "-" for c in classes]] for r in shown],
        )
        lines.append("")
        lines += _per_seed_section(board)

    if figures:
        lines += ["## Figures", ""]
        for name, path in figures.items():
            lines += [f"![{name}]({path.relative_to(root).as_posix()})", ""]

    if samples:
        lines += [
            "## Samples",
            "",
            (
                "What each strategy trains on: training slices beside their augmented "
                "versions, or slices a generator added, tumour outlines in red "
                "(`augforge preview` draws more)."
            ),
            "",
        ]
        for label, path in samples.items():
            lines += [f"### `{label}`", "", f"![{label}]({path.relative_to(root).as_posix()})", ""]

    if board.failed:
        lines += [
            "## Failed trials",
            "",
            (
                "These trials raised; their tracebacks are in `run.log`. The ranking "
                "above leaves them out (a strategy's n_trials counts only finished "
                "seeds)."
            ),
            "",
        ]
        lines += _table(
            ["trial", "strategy", "seed", "train fraction", "error"],
            [
                [
                    f["key"],
                    f"`{f['strategy']}`",
                    str(f["seed"]),
                    f"{f['train_fraction']:g}",
                    f.get("error", "").splitlines()[0][:200] if f.get("error") else "",
                ]
                for f in board.failed
            ],
        )
        lines.append("")

    if recs:
        lines += ["## Trials", ""]
        lines += _table(
            [
                "trial",
                "strategy",
                "seed",
                "fraction",
                "Dice",
                "train slices",
                "wall (s)",
                "peak RSS (MiB)",
                "data wait",
            ],
            [
                [
                    r["key"],
                    f"`{r['strategy']}`",
                    str(r["seed"]),
                    f"{r['train_fraction']:g}",
                    _f(r["metrics"]["dice"]),
                    str(r.get("training", {}).get("n_total", "-")),
                    _f(r.get("timings_s", {}).get("total", float("nan")), 1),
                    _f(r.get("memory", {}).get("peak_rss_mb", float("nan")), 0),
                    f"{100 * r.get('training', {}).get('data_wait_share', 0.0):.1f}%",
                ]
                for r in recs
            ],
        )
        lines.append("")
    return "\n".join(lines)


def write_report(store: ResultsStore | Path | str, *, n_boot: int = 10_000) -> Leaderboard:
    """Rebuild leaderboard.csv, report.md and figures/ of a study folder from its stored results."""
    if not isinstance(store, ResultsStore):
        store = ResultsStore(store)
    board = build_leaderboard(store, n_boot=n_boot)
    board.shift = shift_table(store, board, n_boot=n_boot)
    atomic_write_text(store.leaderboard_path, leaderboard_csv(board))
    figures = write_figures(board, store.figures_dir)
    curve = store.figures_dir / "learning_curve.png"
    if learning_curve_figure(curve_rows(board.records), curve, unit=subsample_unit(board.records)):
        figures["learning curve"] = curve
    samples: dict[str, Path] = {}
    for label in dict.fromkeys(r.label for r in board.rows):  # every finished strategy, in ranked order
        path = sample_grid_path(store.figures_dir, label)
        if path.exists():  # drawn by `augforge bench`, which has the data and the strategies
            samples[label] = path
    text = render_markdown(board, figures, store.root, samples)
    if store.command_path.exists():
        text += "\n## How this study was run\n\n" + store.command_path.read_text()
    atomic_write_text(store.report_path, text)
    return board
