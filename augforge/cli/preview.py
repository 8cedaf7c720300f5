"""``augforge preview``: what a strategy does to training slices, as a picture.

Each sample is shown as a pair, the slice as the network would get it without augmentation and
the same slice after the strategy's online transform, tumour outlines drawn on both. Every image is
shown on the fixed [0, 1] grey scale, so intensity changes are visible rather than normalised away.

A strategy with an offline ``prepare`` step (a generator such as DCGAN) runs it on the training
split exactly as a trial would, and the slices it *adds* are shown instead, each beside itself after
the online transform when the strategy has one (``dcgan+affine``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from augforge import seeding
from augforge.cli.options import DataOption, PresetOption, SetOption
from augforge.config import DEFAULT_PRESET, Preset, apply_overrides, get_preset, parse_set_options, split_overrides
from augforge.errors import DataError, UsageError
from augforge.fileio import atomic_write_bytes
from augforge.plugins import get_registry
from augforge.strategy import PrepareContext, Strategy

if TYPE_CHECKING:
    from augforge.bench.trial import Trial
    from augforge.config import DataConfig
    from augforge.data.records import Dataset, Slice

MAX_SAMPLES = 64
_OUTLINE = "#ff3b30"  # tumour outline colour: visible on any grey


@dataclass
class PreviewPair:
    """One sample of the preview: a slice and, when the strategy has an online transform, its
    augmented version. Images (H, W) float32 in [0, 1]; masks (H, W) uint8 {0, 1}."""

    title: str
    image: np.ndarray
    mask: np.ndarray
    augmented: np.ndarray | None = None
    augmented_mask: np.ndarray | None = None

    @property
    def unchanged(self) -> bool:
        """True when the transform left this sample as it was (an op with p < 1 did not fire)."""
        return (
            self.augmented is not None
            and np.array_equal(self.augmented, self.image)
            and np.array_equal(self.augmented_mask, self.mask)
        )


def load_dataset(cfg: DataConfig, *, progress: bool = True) -> Dataset:
    """The data layer's loader (imported when needed; a seam for tests)."""
    from augforge.data.sources import load_dataset as load

    return load(cfg, progress=progress)


def default_cache_dir() -> Path:
    """Where strategies cache fitted generators: the folder ``augforge bench`` uses, so a generator
    fitted for a preview is reused by the benchmark (and the other way round)."""
    from augforge.bench.trial import TrialEnv

    return TrialEnv().cache_dir


def _pick(slices: list[Slice], n: int, seed: int) -> list[Slice]:
    """``n`` slices chosen by ``seed``, in dataset order: only slices with a tumour, when there are any
    (an outline shows what the transform did to the mask)."""
    with_tumour = [s for s in slices if s.has_tumour] or slices
    if len(with_tumour) <= n:
        return list(with_tumour)
    chosen = seeding.stream(seed).choice(len(with_tumour), size=n, replace=False)
    return [with_tumour[i] for i in sorted(chosen)]


def preview_pairs(
    strategy: Strategy,
    dataset: Dataset,
    *,
    n: int,
    seed: int,
    preset: Preset,
    cache_dir: Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> tuple[list[PreviewPair], str]:
    """The samples to draw for ``strategy`` and a one-line caption saying what they are.

    Online-only strategies: ``n`` training slices (with a tumour) and their augmented versions.
    Strategies with ``prepare``: ``n`` of the slices ``prepare`` adds to the training split.
    The same ``seed`` picks the same slices and draws the same augmentations.
    """
    train = list(dataset.train)
    if not train:
        raise DataError(f"dataset {dataset.name!r} has no training slices to preview")
    source, caption = train, "training slices"
    if strategy.has_prepare:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        ctx = PrepareContext.for_dataset(
            dataset, seed=seed, preset=preset, cache_dir=cache_dir, device=device, log=log, progress=progress
        )
        log(f"running {strategy.label}'s prepare step on {len(train)} training slices")
        known = {s.id for s in train}
        added = [s for s in strategy.prepare(train, ctx) if s.id not in known]
        if added:
            source, caption = added, f"slices added by {strategy.label}'s prepare step"
        else:
            log(f"{strategy.label}'s prepare step added no slices; showing training slices")

    transform = strategy.build_transform(seed)
    pairs = []
    for s in _pick(source, n, seed):
        if s.image is None:  # a generator may add slices in HU only: preprocess them as a trial does
            from augforge.data.processing.preprocess import network_input

            s.image = network_input(
                s, preset.data.window, preset.data.clahe, preset.data.input, preset.data.field_margin_mm
            )
        pair = PreviewPair(title=f"{s.id} ({s.label})", image=s.image, mask=s.mask)
        if transform is not None:
            pair.augmented, pair.augmented_mask = transform(s.image, s.mask)
        pairs.append(pair)
    if transform is None:
        caption += "; no online transform"
    return pairs, caption


def draw_preview(pairs: list[PreviewPair], path: Path, title: str) -> None:
    """Write the grid of ``pairs`` to ``path`` (format from the suffix: .png, .pdf, .svg)."""
    from matplotlib.figure import Figure

    if not pairs:
        raise DataError("nothing to preview: no slices were selected")
    with_aug = any(p.augmented is not None for p in pairs)
    per_row = min(len(pairs), 4 if with_aug else 8)
    rows = -(-len(pairs) // per_row)
    cols = per_row * (2 if with_aug else 1)
    fig = Figure(figsize=(2.0 * cols, 2.1 * rows + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for i, pair in enumerate(pairs):
        row, slot = divmod(i, per_row)
        panels = [(pair.image, pair.mask, pair.title)]
        if with_aug:
            note = "augmented (unchanged)" if pair.unchanged else "augmented"
            panels.append((pair.augmented, pair.augmented_mask, note))
        for j, (image, mask, label) in enumerate(panels):
            ax = axes[row, slot * len(panels) + j]
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if mask is not None and mask.any():
                ax.contour(mask, levels=[0.5], colors=_OUTLINE, linewidths=0.8)
            ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lower().lstrip(".") or "png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())  # never a half-written image


SAMPLES_PER_STRATEGY = 4


def write_study_samples(
    trials: Sequence[Trial],
    dataset: Dataset,
    figures_dir: Path,
    *,
    n: int = SAMPLES_PER_STRATEGY,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, Path]:
    """One sample grid per strategy of a study, for its report: ``figures/samples/<strategy>.png``.

    Each grid shows what the strategy's trial at its largest train fraction (lowest seed) trains on:
    that trial's training subset, parameters, preset and seed, so a generator fitted by the trial is
    reused from the cache rather than fitted again. Grids already drawn are kept (a resumed study
    does not redraw them). A grid that cannot be drawn is logged and skipped: pictures never fail a
    study whose trials finished. Returns {strategy label: grid path} for the grids that exist.
    """
    import dataclasses

    from augforge.bench.figures import sample_grid_path
    from augforge.bench.trial import subsample_train

    chosen: dict[str, Trial] = {}
    for t in trials:
        label = t.name
        best = chosen.get(label)
        if best is None or (t.train_fraction, -t.seed) > (best.train_fraction, -best.seed):
            chosen[label] = t
    cache_dir = cache_dir or default_cache_dir()
    written: dict[str, Path] = {}
    for label, t in chosen.items():
        path = sample_grid_path(figures_dir, label)
        if path.exists():
            written[label] = path
            continue
        try:
            strategy = get_registry().create(t.strategy, t.strategy_params)
            train = subsample_train(dataset.train, t.train_fraction, t.seed, t.preset.train.subsample)
            subset = dataclasses.replace(dataset, train=train)
            pairs, caption = preview_pairs(
                strategy, subset, n=n, seed=t.seed, preset=t.preset, cache_dir=cache_dir, log=log, progress=progress
            )
            frac = "" if t.train_fraction == 1.0 else f", train fraction {t.train_fraction:g}"
            draw_preview(pairs, path, f"{label}: {caption} (seed {t.seed}{frac})")
        except Exception as exc:  # noqa: BLE001 -- a picture must not fail a study whose trials finished
            log(f"warning: no sample grid for {label}: {type(exc).__name__}: {exc}")
            continue
        written[label] = path
    return written


def _check_out(out: Path) -> Path:
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise UsageError(f"--out {out}: cannot tell the image format from the suffix; use .png, .pdf or .svg")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name such as {out / 'preview.png'}")
    return out


def preview_cmd(
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            "-s",
            metavar="NAME",
            help="Strategy to preview: a name or parts joined by '+' (dcgan+affine).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Image to write (.png, .pdf or .svg).")],
    n: Annotated[int, typer.Option("--n", metavar="N", help=f"Number of samples (1 to {MAX_SAMPLES}).")] = 16,
    data: DataOption = None,
    preset: PresetOption = DEFAULT_PRESET,
    set_: SetOption = None,
    seed: Annotated[
        int, typer.Option("--seed", metavar="SEED", help="Picks the slices and seeds the augmentation.")
    ] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Draw training slices beside their augmented versions, tumour outlines on both."""
    from rich.console import Console

    if not 1 <= n <= MAX_SAMPLES:
        raise UsageError(f"--n {n}: give a number of samples from 1 to {MAX_SAMPLES}")
    out = _check_out(out)
    preset_overrides, strategy_params = split_overrides(parse_set_options(set_ or []))
    cfg = apply_overrides(get_preset(preset), preset_overrides)
    if data is not None:
        cfg.data.source = data
    registry = get_registry()
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for problem in registry.errors:
        console.print(f"warning: {problem}", markup=False)
    parts = [p.strip() for p in strategy.split("+")]
    for section, values in strategy_params.items():
        if section not in parts:
            raise UsageError(
                f"--set {section}.{next(iter(values))}: {section!r} is not a preset section "
                f"(data, model, train, gen) nor a part of strategy {strategy!r}"
            )
    strat = registry.create(strategy, strategy_params)

    def log(msg: str) -> None:
        console.print(msg, markup=False)

    log(f"augforge preview: strategy {strat.label}, seed {seed}, preset {cfg.name}, data {cfg.data.source}")
    dataset = load_dataset(cfg.data, progress=progress)
    pairs, caption = preview_pairs(
        strat, dataset, n=n, seed=seed, preset=cfg, cache_dir=default_cache_dir(), log=log, progress=progress
    )
    title = f"{strat.label} on {dataset.name}: {caption} (seed {seed})"
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_preview(pairs, out, title)
    changed = sum(1 for p in pairs if p.augmented is not None and not p.unchanged)
    tail = f", {changed} changed by the transform" if any(p.augmented is not None for p in pairs) else ""
    log(f"wrote {out}: {len(pairs)} samples{tail}")


def register(app: typer.Typer) -> None:
    app.command("preview")(preview_cmd)
