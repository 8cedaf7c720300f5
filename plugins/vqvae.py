"""Built-in plugin: ``vqvae``, tumours sampled from a VQ-VAE's learnt prior, pasted into healthy lung.

The seed work's second generator, and its best single strategy in the notebooks (Dice 0.4191 against
0.4001 for the DCGAN and 0.3709 without augmentation; reference/PAPER_PROTOCOL.md). The model is in
:mod:`augforge.models.vqvae`: a VQ-VAE learns a discrete code grid for each training tumour patch, a
Gated PixelCNN learns the distribution of those grids, and each new tumour is a grid drawn from that
prior and decoded, as in the notebooks (not a perturbed copy of a real tumour).

As the improved ``dcgan``, it learns a tumour's intensities and its coverage together, so a
sample's mask is generated rather than thresholded; pasting, sizes, canvases and caching are those
of every generator (:class:`augforge.synthesis.GeneratorStrategy`). Sizes follow the preset's
``gen`` section, scaled from the notebooks' network by ``(gen.width / 64) ** 1.5``: the ``paper``
preset gives their 64x64 patches, width 256, 512 codes of 64 dimensions, 15,000 updates and a
10-layer prior of width 256 (1,100 updates); ``quick`` gives 32x32 patches, width 32, 64 codes of 8,
3,000 updates and a 4-layer prior of width 32. The strategy's parameters override some.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from augforge import Param, PrepareContext, hookimpl
from augforge.synthesis import (
    MATCH_NOISE,
    PASTE_PARAMS,
    Fitted,
    GeneratorStrategy,
    PasteScale,
    TumourROIs,
    gen_seed_param,
    ratio_param,
    sizes_param,
)

#: The notebooks' network at gen.width = 64 (the paper preset); smaller presets scale it down.
_NOTEBOOK = {"width": 256, "res_width": 32, "codes": 512, "code_dim": 64, "prior_layers": 10}


class VQVAETumours(GeneratorStrategy):
    name = "vqvae"
    description = (
        "VQ-VAE with a PixelCNN prior generating tumour HU and mask, pasted into healthy lung parenchyma "
        "(the seed work's best single generator)."
    )
    stream = 0x70AE  # its own random stream for placement
    model_io = ("augforge.models.vqvae", "save_vqvae", "load_vqvae")
    params = (
        ratio_param(),
        Param("steps", int, None, "VQ-VAE updates; None: 50 x the preset's gen.epochs", low=1, nullable=True),
        Param("codes", int, None, "codebook size; None: 512 x (gen.width / 64) ** 1.5", low=2, nullable=True),
        gen_seed_param(),
        Param(
            "roi_size",
            int,
            None,
            "patch side; None: the preset's gen.roi_size",
            choices=(16, 32, 64, 128),
            nullable=True,
        ),
        MATCH_NOISE,
        sizes_param("train"),
        *PASTE_PARAMS,
    )

    # -- the fit ------------------------------------------------------------------------------
    def fit_config(self, ctx: PrepareContext) -> Any:
        """The :class:`augforge.models.vqvae.VQVAEConfig` of this strategy under ``ctx.preset``."""
        from augforge.models.vqvae import VQVAEConfig

        g, c = ctx.preset.gen, self.config
        scale = (g.width / 64) ** 1.5  # the paper preset's gen.width 64: the notebooks' sizes

        def scaled(key: str, low: int) -> int:
            return max(low, round(_NOTEBOOK[key] * scale))

        return VQVAEConfig(
            size=c["roi_size"] or g.roi_size,
            channels=2,
            width=scaled("width", 8),
            res_width=scaled("res_width", 4),
            codes=c["codes"] or scaled("codes", 16),
            code_dim=scaled("code_dim", 4),
            steps=c["steps"] or 50 * g.epochs,
            batch_size=16,
            prior_width=scaled("width", 8),
            prior_layers=scaled("prior_layers", 4),
            prior_steps=min(1_100, 20 * g.epochs),
            seed=ctx.seed if c["gen_seed"] is None else c["gen_seed"],
        )

    def patch_size(self, ctx: PrepareContext) -> int:
        return self.fit_config(ctx).size

    def fit_facts(self, ctx: PrepareContext, scale: PasteScale) -> dict[str, Any]:
        return {"fit": asdict(self.fit_config(ctx)), "window": [scale.lo, scale.hi]}

    def fit_generator(
        self, rois: TumourROIs, ctx: PrepareContext, *, folder: Path, scale: PasteScale, state: Any
    ) -> tuple[Any, dict[str, Any]]:
        import torch

        from augforge.models.vqvae import train_vqvae

        cfg = self.fit_config(ctx)
        ctx.log(
            f"{self.name}: {cfg.size}x{cfg.size}x2, width {cfg.width}, {cfg.codes} codes of {cfg.code_dim}, "
            f"{cfg.steps} steps, prior {cfg.prior_layers} layers x {cfg.prior_steps} steps, seed {cfg.seed}"
        )
        window = scale.generator
        x = np.concatenate([window.to_unit(rois.hu)[:, None], rois.coverage[:, None] * 2 - 1], axis=1)
        fit = train_vqvae(
            torch.from_numpy(x.astype(np.float32)), cfg, device=ctx.device, progress=ctx.progress, log=ctx.log
        )
        return fit, self.fit_record(fit)

    # -- sampling -----------------------------------------------------------------------------
    def sample_patches(self, fitted: Fitted, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` tumours drawn from the prior: intensities (n, S, S) float32 and masks (n, S, S) bool."""
        from augforge.models.vqvae import sample_vqvae

        x = sample_vqvae(fitted.model, n, seed=seed)
        return fitted.scale.generator.to_hu(x[:, 0]).astype(np.float32), x[:, 1] > 0


@hookimpl
def register_strategies(register):
    register(VQVAETumours)
