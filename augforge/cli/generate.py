"""``augforge generate``: fit (or reuse) a strategy's tumour generator and write synthetic slices.

Output folder::

    OUT/
        images/<id>.npy     synthetic slices, HU (float32)      } the dataset format of a folder
        masks/<id>.npy      their tumour masks (uint8 {0, 1})   } source: `--data OUT` reads it back
        labels.csv          id, label, split (train), patient, spacing_mm
        provenance.jsonl    one line per slice: canvas, position, generator, measurements
        tumours.png         generated tumour patches (lung window), real training patches below
        pasted.png          pasted tumours in their slices: each crop plain and with the mask outline
        quality.json, quality.md   generated vs real tumours (see augforge.synthesis.quality)
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from augforge.cli.options import AllowPickleOption, DataOption, PresetOption, SetOption
from augforge.config import DEFAULT_PRESET, apply_overrides, get_preset, parse_set_options, split_overrides
from augforge.errors import UsageError


def tumour_grid(hu: np.ndarray, mask: np.ndarray, *, n: int = 64, zoom: int = 2) -> np.ndarray:
    """(N, S, S) tumour patches -> one grey grid: each tumour on a plain parenchyma background."""
    import cv2

    from augforge.data.display.preview import windowed
    from augforge.models.dcgan import image_grid
    from augforge.synthesis import PARENCHYMA_HU

    tiles = windowed(np.where(np.asarray(mask[:n]) > 0, hu[:n], PARENCHYMA_HU))
    tiles = np.stack([cv2.resize(t, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) for t in tiles])
    return image_grid(tiles, ncols=8)


def pasted_grid(slices: list, *, n: int = 12, crop: int = 64, zoom: int = 2) -> np.ndarray:
    """Crops (``crop`` pixels, zoomed) around pasted tumours, each shown plain and with the mask's
    outline in red: (H, W, 3) RGB in [0, 1], two pairs per row."""
    import cv2

    from augforge.data.display.preview import windowed
    from augforge.models.dcgan import image_grid

    tiles = []
    for s in slices[:n]:
        r, c = s.provenance["position"]
        h, w = s.provenance["size_px"]
        H, W = s.shape
        side = min(crop, H, W)
        y0 = int(np.clip(r + h // 2 - side // 2, 0, H - side))
        x0 = int(np.clip(c + w // 2 - side // 2, 0, W - side))
        grey = windowed(s.hu[y0 : y0 + side, x0 : x0 + side])
        grey = cv2.resize(grey, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC).clip(0, 1)
        m = cv2.resize(s.mask[y0 : y0 + side, x0 : x0 + side], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        plain = np.repeat(grey[..., None], 3, axis=2)
        outlined = np.ascontiguousarray(plain.copy())
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(outlined, contours, -1, (1.0, 0.15, 0.1), 1)
        tiles += [plain, outlined]
    if not tiles:
        return np.ones((8, 8, 3), np.float32)
    rgb = np.stack(tiles)
    return np.stack([image_grid(rgb[..., k], ncols=4) for k in range(3)], axis=-1)


def _stack_rows(*grids: np.ndarray, gap: int = 8) -> np.ndarray:
    """Grey grids one above the other, white-padded to a common width, ``gap`` white rows between."""
    width = max(g.shape[1] for g in grids)
    parts = []
    for g in grids:
        parts += [np.pad(g, ((0, 0), (0, width - g.shape[1])), constant_values=1.0), np.ones((gap, width), np.float32)]
    return np.concatenate(parts[:-1])


def write_slices(slices: list, out: Path) -> None:
    """Write slices in the folder dataset format (images/, masks/, labels.csv) plus provenance.jsonl."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="") as f, open(out / "provenance.jsonl", "w") as prov:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "split", "patient", "spacing_mm"])
        for s in slices:
            np.save(out / "images" / f"{s.id}.npy", np.asarray(s.hu, np.float32))
            np.save(out / "masks" / f"{s.id}.npy", np.asarray(s.mask, np.uint8))
            writer.writerow([s.id, s.label, "train", s.patient, f"{s.spacing_mm:.6g}"])
            prov.write(json.dumps({"id": s.id, "source": s.source, **s.provenance}, default=str) + "\n")


def generate_cmd(
    n: Annotated[int | None, typer.Option("--n", help="Number of synthetic slices to write.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (written in the folder dataset format).")
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy", "-s", metavar="NAME", help="A strategy that generates tumours (dcgan, dcgan-paper)."
        ),
    ] = "dcgan",
    data: DataOption = None,
    preset: PresetOption = DEFAULT_PRESET,
    set_: SetOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampled tumours and their placement.")] = 0,
    allow_pickle: AllowPickleOption = False,
    force: Annotated[
        bool, typer.Option("--force", help="Write into an output folder that already holds slices.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> None:
    """Fit or reuse a tumour generator on the training split and write N synthetic slices with grids
    and a quality summary. The fitted generator is cached and shared with `augforge bench`."""
    import torch

    from augforge.data.processing.cache import cache_root
    from augforge.data.sources import load_dataset
    from augforge.models.dcgan import write_png
    from augforge.plugins import get_registry
    from augforge.strategy import PrepareContext
    from augforge.synthesis.quality import quality_summary

    console = Console(highlight=False, soft_wrap=True)

    def log(msg: str) -> None:
        console.print(msg, markup=False)

    # 1. Configuration, checked before any data is read.
    if n is None or out is None:
        raise UsageError("give the number of slices and an output folder: --n N --out DIR")
    if n < 1:
        raise UsageError(f"--n {n}: write at least one slice")
    if "+" in strategy:
        raise UsageError(f"--strategy {strategy}: generate takes one strategy, not a composite")
    cfg = get_preset(preset)
    preset_over, strategy_params = split_overrides(parse_set_options(set_ or []))
    cfg = apply_overrides(cfg, preset_over)
    if data:
        cfg.data.source = data
    registry = get_registry()
    unknown = sorted(set(strategy_params) - {strategy})
    if unknown:
        raise UsageError(
            f"--set {unknown[0]}.PARAM: generate runs one strategy ({strategy}); set its "
            "parameters or preset fields only"
        )
    strat = registry.create(strategy, strategy_params)
    if not callable(getattr(strat, "generate", None)):
        raise UsageError(
            f"strategy {strategy!r} does not generate tumours; use one with a generator (dcgan, dcgan-paper)"
        )
    if (out / "labels.csv").exists() and not force:
        raise UsageError(f"{out} already holds generated slices; choose another --out or add --force")
    log(f"augforge generate: strategy {strat.label}, preset {cfg.name}, data {cfg.data.source}, seed {seed}")

    # 2. Data, then the generator (fitted on the training split only, or read from the cache).
    dataset = load_dataset(cfg.data, allow_pickle=allow_pickle, progress=not no_progress)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = PrepareContext.for_dataset(
        dataset,
        seed=seed,
        preset=cfg,
        cache_dir=cache_root() / "generators",
        device=device,
        log=log,
        progress=not no_progress,
    )
    gen = strat.generate(dataset.train, ctx, n)

    # 3. Slices, grids, quality summary.
    out.mkdir(parents=True, exist_ok=True)
    write_slices(gen.slices, out)
    write_png(
        out / "tumours.png",
        _stack_rows(tumour_grid(gen.patches_hu, gen.patches_mask), tumour_grid(gen.real_hu, gen.real_mask)),
    )
    write_png(out / "pasted.png", pasted_grid(gen.slices))
    real_mix = Counter(s.label for s in dataset.train)
    syn_mix = Counter(s.label for s in gen.slices)
    try:
        summary = quality_summary(
            gen.real_hu, gen.real_mask, gen.patches_hu, gen.patches_mask.astype(np.uint8), seed=seed
        )
    except ValueError as exc:  # too few patches to compare distributions
        (out / "quality.md").write_text(f"No quality summary: {exc}.\n")
        log(f"wrote {len(gen.slices)} synthetic slices to {out}; no quality summary ({exc})")
        return
    summary.extra = {
        "Lung-RADS classes of the synthetic slices": dict(sorted(syn_mix.items())),
        "Lung-RADS classes of the real training slices": dict(sorted(real_mix.items())),
        "generator": {k: v for k, v in gen.info.items() if not isinstance(v, (dict, list))},
        "generator warnings": "; ".join(gen.info.get("warnings") or []) or "none",
    }
    (out / "quality.json").write_text(json.dumps(summary.to_dict() | {"generator": gen.info}, indent=1, default=str))
    (out / "quality.md").write_text(summary.to_markdown())
    log(
        f"wrote {len(gen.slices)} synthetic slices to {out} (images/, masks/, labels.csv); "
        f"grids tumours.png, pasted.png; quality.md"
    )
    log(
        f"Fréchet distance {summary.frechet:.3f} (real vs real {summary.frechet_real_halves:.3f}); "
        f"HU W1 {summary.hu_wasserstein:.1f} HU; near copies {100 * summary.near_copy_share:.1f} %"
    )


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
