"""Two runs of one study design side by side: does the second reach the first's verdicts?

Reads two study folders (finished runs of the same strategies, fractions and seeds, e.g. under two
presets or two arithmetics), ranks each with the package's own statistics (the leaderboard, and at
a held-out scanner site the shift table) and pairs their rows by strategy and train fraction. Every
strategy's difference from the baseline gets a verdict in each run: ``+`` (significantly better),
``-`` (significantly worse) or ``n.s.`` (not shown: both tests must reject after Holm's correction,
docs/statistics.md). Prints a markdown table (mean Dice, difference from the baseline, verdict, for
each site and run) and the tally: verdicts the same, moved between significant and not (same sign),
and turned around (significant both times, opposite signs). With ``--json`` prints the same as one
JSON object.

    python benchmarks/compare_studies.py benchmarks/studies/quick-run benchmarks/studies/default-fast-run
    python benchmarks/compare_studies.py A B --names "quick" "fast" --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from augforge.bench.ranking import build_leaderboard, shift_table
from augforge.bench.store import ResultsStore


def _verdict(significant: bool | None, delta: float) -> str:
    if not significant:
        return "n.s."
    return "+" if delta > 0 else "-"


def study_verdicts(folder: Path, *, n_boot: int) -> dict[tuple[str, float], dict[str, Any]]:
    """(strategy, train fraction) -> mean Dice, difference from the baseline and verdict, in-domain
    and, where the trials were scored there, at the held-out site."""
    store = ResultsStore(folder)
    board = build_leaderboard(store, n_boot=n_boot)
    contexts = {row.context for row in board.rows}
    if len({(c[1], c[2]) for c in contexts}) > 1:
        raise SystemExit(f"{folder}: the folder mixes presets or datasets; compare one configuration at a time")
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for row in board.rows:
        entry: dict[str, Any] = {"dice": row.dice.mean, "seeds": row.seeds}
        if row.vs_baseline is not None:
            entry["delta"] = row.vs_baseline.delta
            entry["verdict"] = _verdict(row.significant, row.vs_baseline.delta)
        out[(row.label, row.context[0])] = entry
    for srow in shift_table(store, board, n_boot=n_boot):
        entry = out[(srow.label, srow.context[0])]
        entry["held_out_dice"] = srow.shifted.mean
        if srow.vs_baseline is not None:
            entry["held_out_delta"] = srow.vs_baseline.delta
            entry["held_out_verdict"] = _verdict(srow.significant, srow.vs_baseline.delta)
    return out


def compare(a: dict, b: dict) -> dict[str, Any]:
    """Pair two studies' verdicts; the tally counts every (strategy, fraction, site) both judged."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise SystemExit(f"the two runs hold other strategies or fractions: {only[:6]}")
    rows, same, moved, reversed_ = [], 0, 0, 0
    changes: list[str] = []
    for key in sorted(a, key=lambda k: (-k[1], k[0])):
        rows.append({"strategy": key[0], "fraction": key[1], "a": a[key], "b": b[key]})
        for site, field in (("in-domain", "verdict"), ("held-out", "held_out_verdict")):
            va, vb = a[key].get(field), b[key].get(field)
            if va is None or vb is None:
                continue
            if va == vb:
                same += 1
            elif "n.s." in (va, vb):
                moved += 1
                changes.append(f"{key[0]} @{key[1]:g} {site}: {va} -> {vb}")
            else:
                reversed_ += 1
                changes.append(f"{key[0]} @{key[1]:g} {site}: {va} -> {vb} (turned around)")
    dice_moves = [abs(a[k]["dice"] - b[k]["dice"]) for k in a]
    return {
        "rows": rows,
        "verdicts": same + moved + reversed_,
        "same": same,
        "moved": moved,
        "turned_around": reversed_,
        "changes": changes,
        "median_abs_dice_move": float(np.median(dice_moves)),
    }


def _cell(entry: dict[str, Any], site: str) -> str:
    prefix = "" if site == "in" else "held_out_"
    dice = entry.get(f"{prefix}dice")
    if dice is None:
        return "-"
    if f"{prefix}delta" not in entry:
        return f"{dice:.3f}"
    return f"{dice:.3f}, {entry[f'{prefix}delta']:+.3f} ({entry[f'{prefix}verdict']})"


def markdown(result: dict[str, Any], names: tuple[str, str]) -> str:
    a, b = names
    lines = [
        f"| strategy @ fraction | in-domain: {a} | in-domain: {b} | held-out site: {a} | held-out site: {b} |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = [_cell(r["a"], "in"), _cell(r["b"], "in"), _cell(r["a"], "out"), _cell(r["b"], "out")]
        lines.append(f"| `{r['strategy']} @{r['fraction']:g}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{result['same']} of {result['verdicts']} verdicts the same; {result['moved']} moved between "
        f"significant and not (same sign); {result['turned_around']} turned around. Median move of a "
        f"strategy's mean in-domain Dice: {result['median_abs_dice_move']:.3f}."
    )
    lines.extend(f"- {c}" for c in result["changes"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--names", nargs=2, default=None, metavar=("A", "B"), help="column names (default: folder names)")
    ap.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (the reports use 10,000)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for folder in (args.first, args.second):
        if not (folder / "trials.jsonl").exists():
            print(f"compare_studies: {folder} holds no trials.jsonl: give two study folders", file=sys.stderr)
            return 2
    result = compare(study_verdicts(args.first, n_boot=args.n_boot), study_verdicts(args.second, n_boot=args.n_boot))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result, tuple(args.names or (args.first.name, args.second.name))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
