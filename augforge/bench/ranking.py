"""The leaderboard: strategies ranked by mean per-image Dice, with bootstrap intervals and paired
tests against the baseline (see :mod:`augforge.bench.stats` and docs/statistics.md).

Trials are grouped by (strategy, train fraction, preset, dataset). Groups that share the last three
form a *context*: they were evaluated on the same test images, so they can be compared pairwise;
each context has its own baseline (``none``) and its own ranking.

Beside the strategies, each context shows its *floors* (:mod:`augforge.bench.floors`): predictors
that learn nothing, scored on the same images with the same bootstrap. A strategy *beats the floor*
when the 95% interval of its per-image Dice minus that of the best floor lies above zero.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from augforge.bench.stats import ALPHA, MIN_SEEDS, Comparison, Estimate, bootstrap_mean, compare_paired, holm_adjust
from augforge.bench.store import ResultsStore, json_default
from augforge.errors import DataError
from augforge.strategy import BASELINE

__all__ = [
    "LEADERBOARD_COLUMNS",
    "FloorRow",
    "Leaderboard",
    "LeaderboardRow",
    "build_leaderboard",
    "check_one_configuration",
    "trial_configuration",
    "trial_context",
]

#: Strategy rows are ranked; floor rows have ``rank`` "floor" and ``strategy`` "floor:<name>".
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "rank",
    "strategy",
    "n_trials",
    "dice_mean",
    "dice_ci95_low",
    "dice_ci95_high",
    "delta_vs_baseline",
    "p_value_vs_baseline",
    "delta_vs_best_floor",
    "beats_best_floor",
)
_OTHER_METRICS = ("iou", "precision", "recall", "hd95_mm")


@dataclass
class LeaderboardRow:
    """One strategy in one context. ``p_value_vs_baseline`` (CSV) is :attr:`p_value`."""

    rank: int
    strategy: str  # display name (label, plus fraction/preset/dataset when the store mixes them)
    label: str
    context: tuple[float, str, str]  # (train fraction, preset, dataset fingerprint)
    n_trials: int
    seeds: list[int]
    dice: Estimate
    metrics: dict[str, float]  # mean IoU, precision, recall, HD95 (mm, over defined images)
    per_class: dict[str, tuple[int, float]]  # class -> (images, mean Dice over seeds and images)
    vs_baseline: Comparison | None = None
    p_adjusted: float = float("nan")  # Wilcoxon, Holm across the vs-baseline family
    p_boot_adjusted: float = float("nan")  # two-level bootstrap, Holm across the same family
    vs_next: Comparison | None = None  # against the strategy ranked just below, same context
    p_next_adjusted: float = float("nan")
    p_next_boot_adjusted: float = float("nan")
    is_baseline: bool = False
    vs_floor: Estimate | None = None  # per-image Dice minus the best floor's, same images and seeds

    @property
    def beats_floor(self) -> bool | None:
        """The whole 95% interval of (Dice - best floor's Dice) lies above zero; None without floors."""
        return None if self.vs_floor is None else bool(self.vs_floor.low > 0.0)

    @property
    def significant(self) -> bool | None:
        """Differs from the baseline at the family-wise level ALPHA (None for the baseline itself).

        Both tests must agree: the Wilcoxon test on the test images (given these seeds) *and* the
        two-level bootstrap, which also resamples the seeds. A shift that is consistent across images
        but whose sign depends on the seed is not called a difference: another training run could
        reverse it. With fewer than MIN_SEEDS shared seeds no difference is called (see :attr:`one_seed`)."""
        if self.vs_baseline is None:
            return None
        return bool(self.p_adjusted < ALPHA and self.p_boot_adjusted < ALPHA and not self.one_seed)

    @property
    def one_seed(self) -> bool:
        """Compared with the baseline on a single shared seed: the tests see one training run of each,
        so their p-values say nothing about another run, and no difference is called."""
        return self.vs_baseline is not None and self.vs_baseline.n_seeds < MIN_SEEDS

    @property
    def p_value(self) -> float:
        """The p-value of "differs from the baseline": the larger of the two Holm-adjusted p-values
        (an intersection-union test: significant exactly when both tests are)."""
        return max(self.p_adjusted, self.p_boot_adjusted)

    @property
    def images_only(self) -> bool:
        """The test images shift consistently with the seeds run (Wilcoxon), but the shift is not
        established across training runs (bootstrap over seeds): not significant; more seeds may
        settle it."""
        return self.vs_baseline is not None and not self.one_seed and self.p_adjusted < ALPHA <= self.p_boot_adjusted

    @property
    def separated_from_next(self) -> bool | None:
        """Differs from the next-ranked strategy, by the same two tests (None for the last of a context)."""
        if self.vs_next is None:
            return None
        enough = self.vs_next.n_seeds >= MIN_SEEDS
        return bool(self.p_next_adjusted < ALPHA and self.p_next_boot_adjusted < ALPHA and enough)

    def csv_row(self) -> list[str]:
        delta = "" if self.vs_baseline is None else f"{self.vs_baseline.delta:.6f}"
        p = "" if self.vs_baseline is None else f"{self.p_value:.6g}"
        if self.is_baseline:
            delta = f"{0.0:.6f}"
        vf = "" if self.vs_floor is None else f"{self.vs_floor.mean:.6f}"
        beats = "" if self.beats_floor is None else ("yes" if self.beats_floor else "no")
        return [
            str(self.rank),
            self.strategy,
            str(self.n_trials),
            f"{self.dice.mean:.6f}",
            f"{self.dice.low:.6f}",
            f"{self.dice.high:.6f}",
            delta,
            p,
            vf,
            beats,
        ]


@dataclass
class FloorRow:
    """A predictor that learns nothing, scored on one context's test images (see floors.py)."""

    name: str  # "empty", "centre-disk", "threshold-blob"; or "readers" for the ceiling
    context: tuple[float, str, str]
    dice: Estimate
    metrics: dict[str, float]
    per_class: dict[str, tuple[int, float]]
    best: bool = False  # the highest-scoring floor of its context: the bar a strategy must clear
    kind: str = "floor"  # "floor", or "ceiling": how well the readers agree with each other

    def csv_row(self) -> list[str]:
        return [
            self.kind,
            f"{self.kind}:{self.name}",
            "0",
            f"{self.dice.mean:.6f}",
            f"{self.dice.low:.6f}",
            f"{self.dice.high:.6f}",
            "",
            "",
            "",
            "",
        ]


@dataclass
class Leaderboard:
    rows: list[LeaderboardRow] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # records of failed trials
    records: list[dict[str, Any]] = field(default_factory=list)  # records of ok trials
    contexts: list[tuple[float, str, str]] = field(default_factory=list)
    floors: dict[tuple[float, str, str], list[FloorRow]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. contexts whose floors are missing
    shift: list[ShiftRow] = field(default_factory=list)  # held-out-site scores (shift_table), where any

    def best_floor(self, ctx: tuple[float, str, str]) -> FloorRow | None:
        return next((f for f in self.floors.get(ctx, []) if f.best), None)

    def ceiling(self, ctx: tuple[float, str, str]) -> FloorRow | None:
        """How well the readers agree, where the data have several (None otherwise)."""
        return next((f for f in self.floors.get(ctx, []) if f.kind == "ceiling"), None)

    def context_name(self, ctx: tuple[float, str, str]) -> str:
        frac, preset, fp = ctx
        return f"preset {preset}, train fraction {frac:g}, dataset {fp}"


def trial_context(rec: dict[str, Any]) -> tuple[float, str, str]:
    """The context of a trial record: (train fraction, preset, dataset fingerprint)."""
    return (float(rec["train_fraction"]), str(rec["preset"]), str(rec["dataset"]["fingerprint"]))


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = value


#: Settings that name or locate the data rather than change a result: the dataset's content
#: fingerprint is part of the context instead.
_NOT_CONFIGURATION = {"settings.name", "settings.data.source"}


def trial_configuration(config: dict[str, Any], version: str | None) -> dict[str, Any]:
    """Everything that makes a trial's configuration apart from its seed and train fraction, flat
    (``settings.train.epochs``, ``strategy.params.p``, ..., ``augforge``): two trials may share a
    leaderboard row only when these are equal. The config is compared as the store writes it (JSON),
    so a planned trial's tuples equal a finished trial's lists."""
    config = json.loads(json.dumps(config, default=json_default))
    flat: dict[str, Any] = {}
    _flatten("settings", config.get("settings") or {}, flat)
    _flatten("strategy", config.get("strategy_spec") or {}, flat)
    flat["augforge"] = version
    for k in _NOT_CONFIGURATION:
        flat.pop(k, None)
    return flat


def configuration_difference(a: dict[str, Any], b: dict[str, Any], limit: int = 3) -> str:
    """``settings.train.epochs 15 vs 3, ...``: the first ``limit`` keys whose values differ."""
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    text = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:limit])
    return text + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def record_configuration(rec: dict[str, Any]) -> dict[str, Any]:
    return trial_configuration(rec.get("config") or {}, (rec.get("versions") or {}).get("augforge"))


def check_one_configuration(records: Sequence[dict[str, Any]], where: str) -> None:
    """Refuse to rank a folder whose trials of one strategy and context differ in configuration
    (other settings, parameters or augforge version), or whose strategies of one context were run
    under different settings: a leaderboard row must be one configuration, and a comparison with the
    baseline must hold everything but the strategy fixed. Raises DataError naming what differs."""
    first: dict[tuple, tuple[dict[str, Any], dict[str, Any]]] = {}
    settings: dict[tuple, tuple[dict[str, Any], dict[str, Any]]] = {}
    for rec in records:
        conf = record_configuration(rec)
        ctx = trial_context(rec)
        key = (rec["strategy"], ctx)
        ref = first.setdefault(key, (conf, rec))
        if ref[0] != conf:
            raise DataError(
                f"{where}: strategy {rec['strategy']!r} (train fraction {ctx[0]:g}, preset {ctx[1]}) has trials "
                f"of different configurations ({configuration_difference(ref[0], conf)}; trials "
                f"{ref[1]['key']}, {rec['key']}); a leaderboard row must be one configuration: run variants "
                "into separate --out folders, or give them distinct labels in a study file"
            )
        shared = {k: v for k, v in conf.items() if not k.startswith("strategy")}
        sref = settings.setdefault(ctx, (shared, rec))
        if sref[0] != shared:
            raise DataError(
                f"{where}: trials of train fraction {ctx[0]:g}, preset {ctx[1]} were run under different settings "
                f"({configuration_difference(sref[0], shared)}; trials {sref[1]['key']}, {rec['key']}), so they "
                "cannot be compared with one baseline: run each setting into its own --out folder"
            )


def _display_names(groups: Sequence[tuple[str, tuple[float, str, str]]]) -> dict[tuple, str]:
    """Strategy label, extended by what differs between contexts in this store (if anything)."""
    fracs = {c[0] for _, c in groups}
    presets = {c[1] for _, c in groups}
    fps = {c[2] for _, c in groups}
    names = {}
    for label, (frac, preset, fp) in groups:
        name = label
        if len(fracs) > 1:
            name += f" @{frac:g}"
        if len(presets) > 1:
            name += f" [{preset}]"
        if len(fps) > 1:
            name += f" ({fp[:6]})"
        names[(label, (frac, preset, fp))] = name
    return names


def _row_summary(rows: Sequence[dict[str, Any]], n_runs: int) -> tuple[dict[str, float], dict[str, tuple[int, float]]]:
    """Mean IoU/precision/recall/HD95 and per-class (images, mean Dice) of per-image rows."""
    metrics = {}
    for m in _OTHER_METRICS:
        v = np.array([row[m] for row in rows], dtype=np.float64)
        v = v[np.isfinite(v)]
        metrics[m] = float(v.mean()) if v.size else float("nan")
    per_class: dict[str, tuple[int, float]] = {}
    for cls in sorted({row["class"] for row in rows}):
        d = [row["dice"] for row in rows if row["class"] == cls]
        per_class[cls] = (len(d) // max(n_runs, 1), float(np.mean(d)))
    return metrics, per_class


def _context_floors(
    store: ResultsStore, ctx: tuple[float, str, str], image_ids: list[str], n_boot: int
) -> tuple[list[FloorRow], dict[str, np.ndarray], str]:
    """The floors of one context, their per-image Dice in ``image_ids`` order, and a note when they
    are missing or were scored on other images."""
    from augforge.bench.floors import CEILING, FLOORS, floor_key

    key = floor_key(ctx[2])
    rows = store.floors(key)
    if not rows:
        return [], {}, (f"no floors stored for {key}: run `augforge bench` on this data again to score them")
    out, vectors = [], {}
    for name in (*FLOORS, CEILING):
        by_image = {r["image"]: r for r in rows if r["floor"] == name}
        if not by_image:
            continue
        if sorted(by_image) != image_ids:
            return [], {}, f"floors of {key} were scored on other test images than the trials; not shown"
        vec = np.array([by_image[i]["dice"] for i in image_ids], dtype=np.float64)
        metrics, per_class = _row_summary(list(by_image.values()), 1)
        out.append(
            FloorRow(
                name=name,
                context=ctx,
                dice=bootstrap_mean(vec[None], n_boot=n_boot),
                metrics=metrics,
                per_class=per_class,
                kind="ceiling" if name == CEILING else "floor",
            )
        )
        vectors[name] = vec
    floors_only = [f for f in out if f.kind == "floor"]
    if floors_only:
        best = max(floors_only, key=lambda f: (f.dice.mean, f.name))
        best.best = True
    return out, vectors, ""


def _dice_matrix(store: ResultsStore, recs: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """(seeds, images) Dice of the given trials; columns in image-id order, the same for all rows."""
    image_ids: list[str] | None = None
    rows = []
    for rec in recs:
        by_image = {r["image"]: r["dice"] for r in store.rows(rec["key"])}
        ids = sorted(by_image)
        if image_ids is None:
            image_ids = ids
        elif ids != image_ids:
            raise DataError(
                f"{store.per_image_path}: trial {rec['key']} was scored on other test images than "
                "the other trials of its group; rerun it with --force"
            )
        rows.append([by_image[i] for i in image_ids])
    return np.asarray(rows, dtype=np.float64), image_ids or []


def build_leaderboard(store: ResultsStore, *, n_boot: int = 10_000) -> Leaderboard:
    """Rank every (strategy, context) group of the finished trials in ``store``."""
    ok = store.records("ok")
    check_one_configuration(ok, str(store.root))
    board = Leaderboard(failed=store.records("failed"), records=ok)
    groups: dict[tuple[str, tuple[float, str, str]], list[dict[str, Any]]] = {}
    for rec in ok:
        groups.setdefault((rec["strategy"], trial_context(rec)), []).append(rec)
    names = _display_names(list(groups))
    # Contexts: largest train fraction first, then preset and dataset for a stable order.
    board.contexts = sorted({c for _, c in groups}, key=lambda c: (-c[0], c[1], c[2]))

    matrices: dict[tuple, tuple[np.ndarray, list[int]]] = {}
    ids_by_ctx: dict[tuple, list[str]] = {}
    for ctx in board.contexts:
        ctx_rows: list[LeaderboardRow] = []
        for (label, c), recs in groups.items():
            if c != ctx:
                continue
            recs = sorted(recs, key=lambda r: r["seed"])
            matrix, image_ids = _dice_matrix(store, recs)
            seeds = [int(r["seed"]) for r in recs]
            matrices[(label, ctx)] = (matrix, seeds)
            ids_by_ctx.setdefault(ctx, image_ids)
            all_rows = [row for r in recs for row in store.rows(r["key"])]
            metrics, per_class = _row_summary(all_rows, len(recs))
            ctx_rows.append(
                LeaderboardRow(
                    rank=0,
                    strategy=names[(label, ctx)],
                    label=label,
                    context=ctx,
                    n_trials=len(recs),
                    seeds=seeds,
                    dice=bootstrap_mean(matrix, n_boot=n_boot),
                    metrics=metrics,
                    per_class=per_class,
                    is_baseline=label == BASELINE,
                )
            )
        ctx_rows.sort(key=lambda r: (-r.dice.mean, r.strategy))
        if ctx in ids_by_ctx:
            floors, vectors, note = _context_floors(store, ctx, ids_by_ctx[ctx], n_boot)
            if note:
                board.notes.append(note)
            board.floors[ctx] = floors
            best = next((f for f in floors if f.best), None)
            if best is not None:
                for row in ctx_rows:
                    diff = matrices[(row.label, ctx)][0] - vectors[best.name][None, :]
                    row.vs_floor = bootstrap_mean(diff, n_boot=n_boot)
        base = matrices.get((BASELINE, ctx))
        for i, row in enumerate(ctx_rows):
            row.rank = i + 1
            a, seeds_a = matrices[(row.label, ctx)]
            if base is not None and not row.is_baseline and set(seeds_a) & set(base[1]):
                row.vs_baseline = compare_paired(a, base[0], seeds_a=seeds_a, seeds_b=base[1], n_boot=n_boot)
            if i + 1 < len(ctx_rows):
                nxt = ctx_rows[i + 1]
                b, seeds_b = matrices[(nxt.label, ctx)]
                if set(seeds_a) & set(seeds_b):
                    row.vs_next = compare_paired(a, b, seeds_a=seeds_a, seeds_b=seeds_b, n_boot=n_boot)
        board.rows.extend(ctx_rows)

    # Holm within each context (dataset, preset, train fraction), across every comparison of a
    # family: its strategies vs its baseline; its adjacent pairs. A context's p-values do not change
    # when a study adds another context (another fraction, other data) to the folder. Each test is
    # adjusted within its own family; a difference needs both (LeaderboardRow.significant).
    for ctx in board.contexts:
        rows = [r for r in board.rows if r.context == ctx]
        for comparison, adjusted in [
            ("vs_baseline", ("p_adjusted", "p_boot_adjusted")),
            ("vs_next", ("p_next_adjusted", "p_next_boot_adjusted")),
        ]:
            family = [r for r in rows if getattr(r, comparison) is not None]
            tests = [getattr(r, comparison) for r in family]
            wilcoxon = holm_adjust([c.p_wilcoxon for c in tests])
            bootstrap = holm_adjust([c.p_bootstrap for c in tests])
            for r, p, pb in zip(family, wilcoxon, bootstrap):
                setattr(r, adjusted[0], float(p))
                setattr(r, adjusted[1], float(pb))
    return board


# -- the held-out scanner site --------------------------------------------------------------------
@dataclass
class ShiftRow:
    """One strategy in one context, scored on the test slices as a held-out scanner site acquired them.

    gap:             shifted minus in-domain Dice, paired by image and seed.
    vs_baseline:     shifted Dice minus the baseline's shifted Dice (same images and seeds).
    gap_vs_baseline: this strategy's gap minus the baseline's: does it lose less to the shift?
    p_adjusted / p_boot_adjusted: vs_baseline's Wilcoxon and bootstrap p, Holm across the context's
    strategies; a difference is called as in the leaderboard (both tests, at least MIN_SEEDS seeds).
    """

    strategy: str
    label: str
    context: tuple[float, str, str]
    n_trials: int
    in_domain: Estimate
    shifted: Estimate
    gap: Comparison
    vs_baseline: Comparison | None = None
    gap_vs_baseline: Comparison | None = None
    p_adjusted: float = float("nan")
    p_boot_adjusted: float = float("nan")
    is_baseline: bool = False

    @property
    def one_seed(self) -> bool:
        return self.vs_baseline is not None and self.vs_baseline.n_seeds < MIN_SEEDS

    @property
    def significant(self) -> bool | None:
        if self.vs_baseline is None:
            return None
        return bool(self.p_adjusted < ALPHA and self.p_boot_adjusted < ALPHA and not self.one_seed)


def _site_free(image_id: str) -> str:
    """The in-domain id of a held-out-site image (``X@site`` -> ``X``)."""
    return image_id.split("@", 1)[0]


def _shifted_matrix(store: ResultsStore, recs: Sequence[dict[str, Any]], image_ids: list[str]) -> np.ndarray | None:
    """(seeds, images) Dice of the trials on the held-out site, columns in ``image_ids`` (in-domain
    ids) order; None when a trial has no held-out-site rows."""
    out = []
    for rec in recs:
        by_image = {_site_free(r["image"]): r["dice"] for r in store.shifted_rows(rec["key"])}
        if not by_image:
            return None
        if sorted(by_image) != image_ids:
            raise DataError(
                f"{store.per_image_shifted_path}: trial {rec['key']} was scored on other held-out-site "
                "images than its in-domain test images; rerun it with --force"
            )
        out.append([by_image[i] for i in image_ids])
    return np.asarray(out, dtype=np.float64)


def shift_table(store: ResultsStore, board: Leaderboard, *, n_boot: int = 10_000) -> list[ShiftRow]:
    """In-domain against held-out-site Dice for every leaderboard row whose trials were scored at a
    held-out site; empty when none were (data acquired at one site)."""
    out: list[ShiftRow] = []
    matrices: dict[tuple, tuple[np.ndarray, np.ndarray, list[int]]] = {}
    for row in board.rows:
        recs = sorted(
            (r for r in board.records if r["strategy"] == row.label and trial_context(r) == row.context),
            key=lambda r: r["seed"],
        )
        inside, image_ids = _dice_matrix(store, recs)
        shifted = _shifted_matrix(store, recs, image_ids)
        if shifted is None:
            continue
        seeds = [int(r["seed"]) for r in recs]
        matrices[(row.label, row.context)] = (inside, shifted, seeds)
        out.append(
            ShiftRow(
                strategy=row.strategy,
                label=row.label,
                context=row.context,
                n_trials=len(recs),
                in_domain=row.dice,
                shifted=bootstrap_mean(shifted, n_boot=n_boot),
                gap=compare_paired(shifted, inside, n_boot=n_boot),
                is_baseline=row.is_baseline,
            )
        )
    for s in out:
        base = matrices.get((BASELINE, s.context))
        if base is None or s.is_baseline:
            continue
        inside, shifted, seeds = matrices[(s.label, s.context)]
        if not set(seeds) & set(base[2]):
            continue
        s.vs_baseline = compare_paired(shifted, base[1], seeds_a=seeds, seeds_b=base[2], n_boot=n_boot)
        s.gap_vs_baseline = compare_paired(
            shifted - inside, base[1] - base[0], seeds_a=seeds, seeds_b=base[2], n_boot=n_boot
        )
    for ctx in {s.context for s in out}:
        family = [s for s in out if s.context == ctx and s.vs_baseline is not None]
        wilcoxon = holm_adjust([s.vs_baseline.p_wilcoxon for s in family])
        bootstrap = holm_adjust([s.vs_baseline.p_bootstrap for s in family])
        for s, p, pb in zip(family, wilcoxon, bootstrap):
            s.p_adjusted, s.p_boot_adjusted = float(p), float(pb)
    return out
