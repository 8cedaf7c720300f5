"""Built-in plugin: DCGAN tumour synthesis, the seed paper's central method.

``dcgan-paper`` follows the paper (reference/PAPER_PROTOCOL.md): a 1-channel 64x64 DCGAN of the
paper's exact architecture learns tumour patches (HU inside the mask, 2000 HU outside); the
synthetic mask is the generated image thresholded; tumours are shrunk by a random factor 1-4 and
pasted in the upper rows of the lung.

``dcgan`` is the improved default: the generator makes the tumour's HU **and its mask** as two
channels, so the label is generated, not guessed by a threshold; patches are square crops (no
stretching) with a margin relative to the tumour; real patches are flipped/turned during the fit
and the real label is smoothed to 0.9; tumours are pasted at the sizes real training tumours have;
sizes and budget follow the preset's ``gen`` section unless the strategy's parameters say otherwise.

Both fit on the training split only, cache the fitted generator under
``ctx.cache_dir/<name>-<key>`` (key: the exact tumour patches, their slice ids, the dataset
fingerprint, the fit configuration and the generator seed), and add ``ratio`` synthetic slices per
real training slice, each a healthy canvas with one generated tumour in its lung parenchyma. Data
without healthy slices (crop exports) paste into the real training slices, clear of their tumours.
``dcgan`` also runs on images without Hounsfield units (8-bit crops): the generator's range, the
patches' background and where lung and vessels lie are then read from the training slices
(:mod:`augforge.synthesis.intensity`). ``dcgan-paper`` keeps the paper's HU conventions and needs HU.

Seeds: the fit uses ``gen_seed`` (default 0), not the trial's seed, so a study over several seeds
fits the generator once and the seeds vary the sampled tumours, their placement and the U-Net
training. Set ``gen_seed=None`` to refit per trial seed and include the generator's own variance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from augforge import DataError, Param, PrepareContext, Slice, Strategy, hookimpl, seeding
from augforge.fileio import remove_stale_temporaries
from augforge.synthesis import (
    CANVAS_TRIES,
    HU_SCALE,
    PARENCHYMA_HU,
    GeneratedSet,
    HUScale,
    PasteScale,
    TumourROIs,
    canvas_site,
    extract_rois,
    paste_canvases,
    paste_into_canvases,
    paste_scale,
)

if TYPE_CHECKING:
    from augforge import Preset

#: Bump when a change of this module changes what a cached generator is.
FIT_VERSION = 1
#: Separates this strategy's paste-in draws from others seeded with the same trial seed.
_STREAM = 0xDC6A
#: Slice side of the paper's data: its "downscale by 1-4" refers to 512-pixel slices.
_PAPER_SLICE_PX = 512


@dataclass(frozen=True)
class Variant:
    """What differs between the paper's DCGAN and the improved one."""

    channels: int  # 1: HU (mask by threshold); 2: HU and mask
    scale: HUScale  # HU window mapped to the generator's [-1, 1]
    background_hu: float  # value outside the tumour in the training patches
    margin_px: int
    margin_frac: float
    square: bool
    real_label: float
    augment: bool


@dataclass
class FittedGenerator:
    """A trained generator and what it was trained on."""

    generator: Any  # augforge.models.dcgan.Generator
    key: str
    rois: TumourROIs
    meta: dict[str, Any]
    cache_hit: bool
    variant: Variant | None = None  # as fitted (its scale follows the data's intensities)
    scale: PasteScale = HU_SCALE


def _params(*, paper: bool) -> tuple[Param, ...]:
    common = (
        Param("ratio", float, 1.0, "synthetic slices per real training slice (paper: 1)", low=0.0, high=20.0),
        Param("epochs", int, None, "fit epochs; None: the preset's gen.epochs", low=1, nullable=True),
        Param("batch_size", int, None, "fit batch size; None: the preset's gen.batch_size", low=2, nullable=True),
        Param(
            "gen_seed",
            int,
            0,
            "seed of the generator fit; None: the trial's seed (one fit per seed)",
            low=0,
            nullable=True,
        ),
        Param("feather_px", float, 1.5, "width of the pasted tumour's soft edge, pixels", low=0.0, high=10.0),
        Param("clearance_px", float, 1.0, "distance kept from vessels and the lung wall, pixels", low=0.0, high=20.0),
    )
    if paper:
        return common + (
            Param(
                "threshold_hu",
                float,
                1000.0,
                "generated pixels below this HU are tumour (the background is 2000 HU)",
                low=-1000.0,
                high=2000.0,
            ),
            Param(
                "max_row_frac",
                float,
                350 / 512,
                "tumours only above this fraction of the slice height (paper: row < 350 of 512)",
                low=0.05,
                high=1.0,
            ),
            Param(
                "sizes",
                str,
                "paper",
                "tumour sizes: 'paper' (64 px shrunk by 1-4 at 512 px) or 'train' (the training tumours' sizes)",
                choices=("paper", "train"),
            ),
        )
    return common + (
        Param("width", int, None, "base width of G and D; None: the preset's gen.width", low=1, nullable=True),
        Param("latent_dim", int, None, "latent size; None: the preset's gen.latent_dim", low=1, nullable=True),
        Param(
            "roi_size",
            int,
            None,
            "patch side (a power of two); None: the preset's gen.roi_size",
            choices=(8, 16, 32, 64, 128),
            nullable=True,
        ),
        Param("match_noise", bool, True, "add the canvas's pixel noise to the smooth generated tumour"),
        Param(
            "sizes",
            str,
            "train",
            "tumour sizes: 'train' (the training tumours' sizes) or 'paper' (patch shrunk by 1-4 at 512 px)",
            choices=("paper", "train"),
        ),
    )


class TumourGAN(Strategy):
    """Shared machinery of ``dcgan`` and ``dcgan-paper``: fit or reuse, sample, place, paste."""

    variant: ClassVar[Variant]

    def variant_for(self, scale: PasteScale) -> Variant:
        """The variant on ``scale``: as declared on HU; on other scales, the generator's range and the
        patches' background taken from the scale."""
        if scale.unit == "HU":
            return self.variant
        return replace(self.variant, scale=scale.generator, background_hu=scale.parenchyma)

    # -- the fit ------------------------------------------------------------------------------
    def fit_config(self, preset: Preset, trial_seed: int) -> Any:
        """The :class:`augforge.models.dcgan.DCGANConfig` of this strategy under ``preset``."""
        from augforge.models.dcgan import DCGANConfig

        g, c = preset.gen, self.config
        if self.variant.channels == 1:  # the paper's architecture, whatever the preset
            size, width, latent = 64, 64, 128
        else:
            size = c["roi_size"] or g.roi_size
            width = c["width"] or g.width
            latent = c["latent_dim"] or g.latent_dim
        return DCGANConfig(
            size=size,
            channels=self.variant.channels,
            latent_dim=latent,
            width=width,
            epochs=c["epochs"] or g.epochs,
            batch_size=c["batch_size"] or g.batch_size,
            real_label=self.variant.real_label,
            augment=self.variant.augment,
            seed=trial_seed if c["gen_seed"] is None else c["gen_seed"],
            sample_every=g.sample_every,
        )

    def tumour_patches(self, train: list[Slice], size: int, variant: Variant | None = None) -> TumourROIs:
        """The training tumours as ``size`` x ``size`` patches (real tumour slices only)."""
        real = [s for s in train if s.has_tumour and not s.is_synthetic]
        v = variant or self.variant
        return extract_rois(
            real,
            size=size,
            margin_px=v.margin_px,
            margin_frac=v.margin_frac,
            square=v.square,
            background_hu=v.background_hu,
        )

    def encode(self, rois: TumourROIs, variant: Variant | None = None) -> np.ndarray:
        """Patches -> generator space: (N, channels, S, S) float32 in [-1, 1]."""
        v = variant or self.variant
        x = v.scale.to_unit(rois.hu)[:, None]
        if v.channels == 2:
            # The mask channel is the tumour's coverage of each pixel: a generator matches soft
            # edges far more easily than a binary step, and decode() thresholds it at one half.
            x = np.concatenate([x, rois.coverage[:, None] * 2 - 1], axis=1)
        return x

    def decode(self, x: np.ndarray, variant: Variant | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Generator space (n, channels, S, S) -> HU (n, S, S) float32 and tumour masks (n, S, S) bool."""
        v = variant or self.variant
        hu = v.scale.to_hu(x[:, 0])
        mask = x[:, 1] > 0 if v.channels == 2 else hu < self.config["threshold_hu"]
        return hu, mask

    def cache_key(self, rois: TumourROIs, cfg: Any, fingerprint: str, variant: Variant | None = None) -> str:
        h = hashlib.sha256()
        fit = {k: v for k, v in asdict(cfg).items() if k not in ("sample_every", "checkpoint_every")}
        h.update(
            json.dumps(
                {
                    "strategy": self.name,
                    "version": FIT_VERSION,
                    "fit": fit,
                    "variant": asdict(variant or self.variant),
                    "fingerprint": fingerprint,
                    "slices": sorted(set(rois.slice_ids)),
                },
                sort_keys=True,
                default=str,
            ).encode()
        )
        for array in (rois.hu, rois.mask, rois.coverage):
            h.update(array.tobytes())
        return h.hexdigest()[:16]

    def fit(self, train: list[Slice], ctx: PrepareContext) -> FittedGenerator:
        """Fit the generator on ``train``'s tumours, or load the one fitted before on the same data."""
        import torch

        from augforge.models.dcgan import load_generator, save_generator, train_dcgan

        cfg = self.fit_config(ctx.preset, ctx.seed)
        scale = paste_scale(ctx.intensity, train)
        variant = self.variant_for(scale)
        rois = self.tumour_patches(train, cfg.size, variant)
        key = self.cache_key(rois, cfg, ctx.dataset_fingerprint, variant)
        folder = Path(ctx.cache_dir) / f"{self.name}-{key}"
        path = folder / "generator.pt"
        with _fit_lock(folder):  # trials running in parallel wait for one fit instead of repeating it
            remove_stale_temporaries(folder, older_than_s=0)  # a killed fit's; the lock keeps others out
            if path.exists():
                try:
                    generator, meta = load_generator(path)
                except DataError as exc:  # changed on disk, damaged, empty: fit again rather than trust it
                    ctx.log(f"{self.name}: the cached generator cannot be used ({exc}); fitting it again")
                    path.unlink()
                else:
                    ctx.log(f"{self.name}: reusing generator {key} ({folder})")
                    return FittedGenerator(generator, key, rois, meta, cache_hit=True, variant=variant, scale=scale)
            ctx.log(
                f"{self.name}: fitting generator {key} on {len(rois)} tumour patches of "
                f"{len(set(rois.slice_ids))} training slices: {cfg.size}x{cfg.size}x{cfg.channels}, "
                f"width {cfg.width}, latent {cfg.latent_dim}, {cfg.epochs} epochs, batch "
                f"{cfg.batch_size}, seed {cfg.seed}"
            )
            result = train_dcgan(
                torch.from_numpy(self.encode(rois, variant)),
                cfg,
                out_dir=folder,
                device=ctx.device,
                progress=ctx.progress,
                log=ctx.log,
                to_display=lambda x: scale.display(variant.scale.to_hu(x[:, 0])),  # lung window, for the grids
            )
            meta = {
                "strategy": self.name,
                "key": key,
                "config": asdict(cfg),
                "seconds": round(result.seconds, 1),
                "trained_on": sorted(set(rois.slice_ids)),
                "n_patches": len(rois),
                "warnings": result.warnings,
                "history": result.history[-1:] if result.history else [],
                "dataset_fingerprint": ctx.dataset_fingerprint,
            }
            save_generator(result.generator, path, meta)
            (folder / "meta.json").write_text(json.dumps(meta | {"history": result.history}, indent=1))
            (folder / "checkpoint.pt").unlink(missing_ok=True)  # the fit is done: keep the generator only
            ctx.log(f"{self.name}: fitted in {result.seconds:.1f} s")
            return FittedGenerator(result.generator, key, rois, meta, cache_hit=False, variant=variant, scale=scale)

    # -- sampling and paste-in ----------------------------------------------------------------
    def sample_patches(self, fitted: FittedGenerator, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` generated tumours: HU (n, S, S) float32 and masks (n, S, S) bool (raw, not resized)."""
        from augforge.models.dcgan import sample

        return self.decode(sample(fitted.generator, n, seed=seed), fitted.variant)

    def _target_shape(self, fitted: FittedGenerator, canvas: Slice, rng: np.random.Generator) -> np.ndarray:
        if self.config["sizes"] == "train":
            # The crop of a random training tumour, in the canvas's pixels: sizes as in the data.
            crop_mm = fitted.rois.crop_mm[rng.integers(len(fitted.rois))]
            px = crop_mm / canvas.spacing_mm
        else:
            side = fitted.rois.size / rng.uniform(1.0, 4.0) * canvas.shape[0] / _PAPER_SLICE_PX
            px = np.array([side, side])
        return np.maximum(np.round(px), 3).astype(int)

    def synthesize(
        self, fitted: FittedGenerator, canvases: list[Slice], n: int, *, seed: int, log: Any = print
    ) -> GeneratedSet:
        """Paste ``n`` generated tumours into ``canvases`` (cycled in a seeded order), one per slice."""
        if n > 0 and not canvases:
            raise DataError(f"strategy {self.name!r} has no slices to paste tumours into: the training split is empty")
        rng = seeding.stream(seed, _STREAM)
        hu_all, mask_all = self.sample_patches(fitted, n, seed=seed)
        order = rng.permutation(len(canvases)) if canvases else np.zeros(0, int)
        sites: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}  # canvas -> (lung, allowed, noise)
        c = self.config
        out: list[Slice] = []
        skipped = 0

        def site(k: int) -> tuple[np.ndarray, np.ndarray, float]:
            if k not in sites:
                canvas = canvases[k]
                max_row = round(c["max_row_frac"] * canvas.shape[0]) if "max_row_frac" in c else None
                sites[k] = canvas_site(
                    canvas,
                    fitted.scale,
                    clearance_px=c["clearance_px"],
                    max_row=max_row,
                    match_noise=bool(c.get("match_noise")),
                )
            return sites[k]

        def shape(canvas: Slice, factor: float) -> tuple[int, int]:
            target = self._target_shape(fitted, canvas, rng)
            return tuple(int(v) for v in np.maximum(np.round(target * factor), 3))

        for i in range(n):
            # A sample without tumour pixels stays empty at any size: no canvas can take it.
            pasted = (
                None
                if not mask_all[i].any()
                else paste_into_canvases(
                    canvases,
                    order,
                    i,
                    hu_all[i],
                    mask_all[i],
                    site=site,
                    shape=shape,
                    rng=rng,
                    slice_id=f"{self.name}-{fitted.key[:8]}-s{seed}-{i:05d}",
                    source=Slice.synthetic_source(self.name),
                    feather_px=c["feather_px"],
                    paste_rng=rng,
                    provenance={"strategy": self.name, "generator": fitted.key, "sample": i, "seed": seed},
                    solid_hu=fitted.scale.solid,
                )
            )
            if pasted is None:
                skipped += 1
            else:
                out.append(pasted)
        if skipped:
            log(
                f"{self.name}: {skipped} of {n} generated tumours were empty or found no free lung "
                f"parenchyma in {CANVAS_TRIES} canvases even when shrunk; {len(out)} synthetic slices made"
            )
        info = {
            "generator": fitted.key,
            "cache_hit": fitted.cache_hit,
            "requested": n,
            "made": len(out),
            **{k: fitted.meta.get(k) for k in ("config", "seconds", "n_patches", "warnings")},
        }
        return GeneratedSet(
            slices=out,
            patches_hu=hu_all,
            patches_mask=mask_all,
            real_hu=fitted.rois.hu,
            real_mask=fitted.rois.mask,
            info=info,
        )

    def generate(self, train: list[Slice], ctx: PrepareContext, n: int) -> GeneratedSet:
        """Fit (or reuse) the generator on ``train`` and paste ``n`` tumours into ``ctx.healthy`` (the
        real training slices where the dataset has no healthy slices)."""
        fitted = self.fit(train, ctx)
        canvases = paste_canvases(train, ctx.healthy, "healthy", who=self.name, log=ctx.log)
        return self.synthesize(fitted, canvases, n, seed=ctx.seed, log=ctx.log)

    def prepare(self, train: list[Slice], ctx: PrepareContext) -> list[Slice]:
        """``train`` followed by ``ratio`` synthetic slices per real training slice."""
        real = sum(1 for s in train if not s.is_synthetic)
        n = round(self.config["ratio"] * real)
        return list(train) + self.generate(train, ctx, n).slices


@contextlib.contextmanager
def _fit_lock(folder: Path):
    """An exclusive lock on ``folder`` across processes (POSIX); no lock where fcntl is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: parallel trials may fit the same generator twice, harmlessly
        yield
        return
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class DCGAN(TumourGAN):
    name = "dcgan"
    description = (
        "DCGAN generating tumour HU and mask together, pasted into healthy lung parenchyma (improved default)."
    )
    params = _params(paper=False)
    variant = Variant(
        channels=2,
        scale=HUScale(-1100.0, 500.0),
        background_hu=PARENCHYMA_HU,
        margin_px=1,
        margin_frac=0.25,
        square=True,
        real_label=0.9,
        augment=True,
    )


class PaperDCGAN(TumourGAN):
    name = "dcgan-paper"
    description = (
        "The seed paper's DCGAN: 64x64 tumour HU only, mask by threshold, pasted into healthy "
        "lung (faithful variant; meant for a GPU)."
    )
    params = _params(paper=True)
    needs_gpu = True
    needs_hu = True  # the paper's conventions are HU: 2000 HU background, threshold_hu, the -1024..2000 map
    variant = Variant(
        channels=1,
        scale=HUScale(-1024.0, 2000.0),
        background_hu=2000.0,
        margin_px=10,
        margin_frac=0.0,
        square=False,
        real_label=1.0,
        augment=False,
    )


@hookimpl
def register_strategies(register):
    register(DCGAN)
    register(PaperDCGAN)
