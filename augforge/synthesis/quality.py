"""How close generated tumour patches are to the real ones, with no downloaded weights.

Four views of generated vs real patches (same side, HU + mask each):

1. Fréchet distance (FID's formula, Heusel et al. 2017) between the feature distributions of a small
   convolutional autoencoder trained here, on the real patches, seconds on a CPU. Its scale has no
   meaning on its own, so the summary also gives the same distance between two halves of the real
   patches (equal sample sizes: the distance is biased by the sample size).
2. HU-histogram distance: the 1-Wasserstein distance (in HU) between the HU of all tumour pixels.
3. Size and shape: area, eccentricity, solidity, compactness and number of pieces of the masks.
4. Memorisation: each generated patch's distance to its nearest training patch (under any of the 8
   flips/turns), against the real patches' leave-one-out nearest-neighbour distances. A share of
   "near copies" well above the 5 % expected by construction means the generator replays its data.

Patches are compared as images of the tumour on a plain parenchyma background (``PARENCHYMA_HU``),
so a generator's own background convention (the paper's 2000 HU) does not count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import linalg, stats
from skimage import measure
from torch import nn

from augforge import seeding
from augforge.synthesis.roi import PARENCHYMA_HU, HUScale

__all__ = ["QualitySummary", "frechet_distance", "quality_summary", "shape_statistics"]

#: The window in which patches are compared (ground glass to calcification).
_SCALE = HUScale(-1100.0, 500.0)
#: Share of real patches whose leave-one-out nearest neighbour is closer than the "near copy" cut.
_COPY_QUANTILE = 0.05


def _canonical(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, S, S) HU and masks -> (N, S, S) float32 in [-1, 1]: tumour on a parenchyma background."""
    return _SCALE.to_unit(np.where(np.asarray(mask) > 0, hu, PARENCHYMA_HU))


class _AutoEncoder(nn.Module):
    """(N, 1, S, S) -> features (N, dim) -> reconstruction. Three stride-2 stages each way."""

    def __init__(self, size: int, dim: int = 32, width: int = 16):
        super().__init__()
        s = size // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(4 * width * s * s, dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(dim, 4 * width * s * s),
            nn.Unflatten(1, (4 * width, s, s)),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _fit_features(real: np.ndarray, *, steps: int, seed: int) -> _AutoEncoder:
    """Train the feature network on real patches (N, S, S) in [-1, 1] (flips/turns as augmentation)."""
    torch.manual_seed(seed)
    rng = seeding.torch_generator(seed)
    net = _AutoEncoder(real.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x_all = torch.from_numpy(real[:, None])
    batch = min(64, len(real))
    for _ in range(steps):
        x = x_all[torch.randint(0, len(real), (batch,), generator=rng)]
        x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=rng)), dims=(-2, -1))
        loss = nn.functional.mse_loss(net(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.inference_mode()
def _features(net: _AutoEncoder, x: np.ndarray) -> np.ndarray:
    return net.encoder(torch.from_numpy(x[:, None])).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n, d) and b (m, d).

    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``; a small ridge keeps rank-deficient
    covariances (fewer samples than features) well defined.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    ridge = 1e-6 * np.eye(a.shape[1])
    ca = np.cov(a, rowvar=False) + ridge
    cb = np.cov(b, rowvar=False) + ridge
    covmean = linalg.sqrtm(ca @ cb)
    covmean = np.real(covmean)  # imaginary parts are numerical noise for PSD inputs
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


def shape_statistics(masks: np.ndarray) -> dict[str, float]:
    """Mean shape descriptors of (N, S, S) masks: area share of the patch, eccentricity, solidity,
    compactness (4 pi area / perimeter^2, 1 for a disc) of the largest piece, and pieces per mask."""
    rows: list[tuple[float, float, float, float, int]] = []
    for m in np.asarray(masks) > 0:
        if not m.any():
            rows.append((0.0, np.nan, np.nan, np.nan, 0))
            continue
        lab = measure.label(m, connectivity=2)
        props = measure.regionprops(lab)
        big = max(props, key=lambda p: p.area)
        compact = 4 * np.pi * big.area / max(big.perimeter, 1.0) ** 2
        rows.append((m.mean(), big.eccentricity, big.solidity, min(compact, 1.0), len(props)))
    arr = np.asarray(rows, np.float64)
    names = ("area_fraction", "eccentricity", "solidity", "compactness", "pieces")
    return {n: float(np.nanmean(arr[:, i])) if len(arr) else float("nan") for i, n in enumerate(names)}


def _dihedral_stack(x: np.ndarray) -> np.ndarray:
    """(N, S, S) -> (8N, S, S): every flip/turn of every patch."""
    turns = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    return np.concatenate(turns + [t[:, :, ::-1] for t in turns])


def _nearest(a: np.ndarray, b: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """For each row of a (n, d), the Euclidean distance to the nearest row of b (m, d)."""
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    d = torch.cdist(ta[None], tb[None])[0]
    if exclude_self:
        n = len(a)
        # b is 8 stacked copies of a (one per flip/turn): patch i reappears at i + k n.
        for k in range(len(b) // n):
            d[torch.arange(n), torch.arange(n) + k * n] = float("inf")
    return d.min(1).values.numpy().astype(np.float64)


@dataclass
class QualitySummary:
    """Generated vs real tumour patches. Distances on [-1, 1] patches unless a unit is given."""

    n_real: int
    n_generated: int
    frechet: float  # generated vs half of the real patches, k samples each
    frechet_real_halves: float  # one half of the real patches vs the other (k each): the noise floor
    hu_wasserstein: float  # HU
    hu_mean_real: float  # HU
    hu_mean_generated: float  # HU
    shape_real: dict[str, float] = field(default_factory=dict)
    shape_generated: dict[str, float] = field(default_factory=dict)
    nn_median_generated: float = 0.0  # generated -> nearest training patch (any flip/turn)
    nn_median_real: float = 0.0  # training patch -> nearest other training patch
    near_copy_share: float = 0.0  # generated patches closer than the real patches' 5 % quantile
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """A short report: one table of the numbers, one of the shapes."""
        lines = [
            f"Generated tumour patches: {self.n_generated}; real training patches: {self.n_real}.",
            "",
            "| measure | generated | reference |",
            "|---|---|---|",
            (
                f"| Fréchet distance (self-trained autoencoder features) | {self.frechet:.3f} | "
                f"{self.frechet_real_halves:.3f} (real half vs real half) |"
            ),
            f"| HU 1-Wasserstein distance to the real tumour pixels | {self.hu_wasserstein:.1f} HU | 0 |",
            f"| mean tumour HU | {self.hu_mean_generated:.1f} | {self.hu_mean_real:.1f} (real) |",
            (
                f"| median distance to the nearest training patch | {self.nn_median_generated:.3f} | "
                f"{self.nn_median_real:.3f} (real, leave-one-out) |"
            ),
            (
                f"| near copies of a training patch | {100 * self.near_copy_share:.1f} % | "
                f"{100 * _COPY_QUANTILE:.0f} % by construction |"
            ),
            "",
            "| shape (mean) | generated | real |",
            "|---|---|---|",
        ]
        for k in self.shape_real:
            lines.append(f"| {k} | {self.shape_generated.get(k, float('nan')):.3f} | {self.shape_real[k]:.3f} |")
        if self.extra:
            lines.append("")
        for k, v in self.extra.items():
            if isinstance(v, dict):
                v = ", ".join(f"{a} {b}" for a, b in v.items()) or "-"
            lines.append(f"- {k}: {v}")
        return "\n".join(lines) + "\n"


def quality_summary(
    real_hu: np.ndarray,
    real_mask: np.ndarray,
    gen_hu: np.ndarray,
    gen_mask: np.ndarray,
    *,
    seed: int = 0,
    feature_steps: int = 300,
) -> QualitySummary:
    """Compare generated patches with the real ones they should resemble.

    real_hu, real_mask: (N, S, S) HU and {0, 1} masks of the training tumours (N >= 4).
    gen_hu, gen_mask:   (M, S, S) the same for generated tumours (M >= 2).
    feature_steps:      training steps of the feature autoencoder (batch 64).
    S must be a multiple of 8. Same inputs and seed, same summary.
    """
    if real_hu.shape[1:] != gen_hu.shape[1:] or real_hu.shape != real_mask.shape or gen_hu.shape != gen_mask.shape:
        raise ValueError(
            f"patch shapes differ: real {real_hu.shape}/{real_mask.shape}, generated {gen_hu.shape}/{gen_mask.shape}"
        )
    if len(real_hu) < 4 or len(gen_hu) < 2:
        raise ValueError(f"need at least 4 real and 2 generated patches, got {len(real_hu)} and {len(gen_hu)}")
    real = _canonical(real_hu, real_mask)
    gen = _canonical(gen_hu, gen_mask)
    rng = seeding.stream(seed)

    # 1. Fréchet distance at equal sample sizes k (it is biased by k): generated vs real half B,
    #    real half A vs real half B.
    net = _fit_features(real, steps=feature_steps, seed=seed)
    f_real, f_gen = _features(net, real), _features(net, gen)
    order = rng.permutation(len(real))
    k = min(len(real) // 2, len(gen))
    a, b = f_real[order[:k]], f_real[order[len(real) // 2 : len(real) // 2 + k]]
    g = f_gen[rng.permutation(len(gen))[:k]]
    fd_gen, fd_ref = frechet_distance(g, b), frechet_distance(a, b)

    # 2. HU of the tumour pixels.
    hu_r = np.asarray(real_hu)[np.asarray(real_mask) > 0]
    hu_g = np.asarray(gen_hu)[np.asarray(gen_mask) > 0]
    w1 = float(stats.wasserstein_distance(hu_r, hu_g)) if hu_g.size else float("nan")

    # 3. Nearest training patch, under every flip/turn (the generator may have seen those).
    flat_real = real.reshape(len(real), -1).astype(np.float32)
    all_real = _dihedral_stack(real).reshape(8 * len(real), -1).astype(np.float32)
    nn_real = _nearest(flat_real, all_real, exclude_self=True)
    nn_gen = _nearest(gen.reshape(len(gen), -1).astype(np.float32), all_real)
    cut = np.quantile(nn_real, _COPY_QUANTILE)

    return QualitySummary(
        n_real=len(real),
        n_generated=len(gen),
        frechet=fd_gen,
        frechet_real_halves=fd_ref,
        hu_wasserstein=w1,
        hu_mean_real=float(hu_r.mean()),
        hu_mean_generated=float(hu_g.mean()) if hu_g.size else float("nan"),
        shape_real=shape_statistics(real_mask),
        shape_generated=shape_statistics(gen_mask),
        nn_median_generated=float(np.median(nn_gen)),
        nn_median_real=float(np.median(nn_real)),
        near_copy_share=float((nn_gen < cut).mean()),
    )
