"""A VQ-VAE with a Gated PixelCNN prior over its codes: the seed work's second tumour generator.

The network follows van den Oord et al. (2017, "Neural Discrete Representation Learning") as the
seed work's notebooks used it (reference/PAPER_PROTOCOL.md; their settings in brackets):

- encoder: two stride-2 4x4 convolutions (to half the width, then the width), a 3x3 convolution and
  a residual stack (ReLU, 3x3 to ``res_width``, ReLU, 1x1 back, added), then a 1x1 convolution to
  the code dimension: a (size/4) x (size/4) grid of vectors [64x64 patches -> 16x16 grid; width 256,
  residual width 32, 2 residual layers, one layer's weights shared by both];
- quantiser: each vector replaced by its nearest of ``codes`` learnt vectors [512 of dimension 64],
  straight-through gradients, codebook loss + ``commitment`` x commitment loss [0.05];
- decoder: the mirror image (3x3, residual stack, two stride-2 4x4 transposed convolutions);
- loss: mean squared reconstruction error + the quantiser's loss [Adam, lr 2e-4, 15,000 updates of
  batch 16];
- new patches: a Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with
  PixelCNN Decoders") learns the distribution of the training patches' code grids [10 layers of
  width 256, cross-entropy, 31 epochs of 36 batches of 16: about 1,100 updates]; sampling draws a grid code by code in raster order
  and decodes it. New tumours are therefore samples of a learnt prior, not perturbed real ones.

What differs here: the patches carry two channels (the tumour's intensities and its coverage, as
the improved DCGAN's), so a sample's mask is generated with it instead of thresholded from the
image; the residual layers have their own weights; real patches are flipped and turned at random
during the fit. Every size follows :class:`VQVAEConfig`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augforge import seeding
from augforge.models.augment import random_dihedral
from augforge.models.weights import load_weights, save_weights
from augforge.progress import bar as progress_bar

__all__ = [
    "GatedPixelCNN",
    "VQVAE",
    "VQVAEConfig",
    "VQVAEFit",
    "load_vqvae",
    "sample_vqvae",
    "save_vqvae",
    "train_vqvae",
]


@dataclass
class VQVAEConfig:
    """Everything that decides a fit. Two fits with equal configs and data give equal models (on one CPU)."""

    size: int = 64  # patch side in pixels (a multiple of 4; the code grid is size/4 per side)
    channels: int = 2  # 2: intensities and coverage; 1: intensities only (the notebooks')
    width: int = 256  # encoder/decoder channels (the first stride-2 convolution has half)
    res_width: int = 32  # inner channels of each residual layer
    res_layers: int = 2
    codes: int = 512  # codebook entries
    code_dim: int = 64  # length of each code vector
    commitment: float = 0.05  # weight of the commitment loss (van den Oord et al. used 0.25)
    steps: int = 15_000  # VQ-VAE updates
    batch_size: int = 16
    lr: float = 2e-4  # Adam
    prior_width: int = 256  # Gated PixelCNN channels
    prior_layers: int = 10
    prior_steps: int = 1_100  # the notebooks: 31 epochs of 36 batches
    prior_lr: float = 3e-4
    augment: bool = True  # random flips and 90-degree turns of the real patches
    restart_after: int = 100  # a code unused for this many updates restarts at an encoder output (0: never)
    seed: int = 0


# -- the VQ-VAE ---------------------------------------------------------------------------------
class _Residual(nn.Module):
    def __init__(self, width: int, res_width: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(width, res_width, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(res_width, width, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _residual_stack(width: int, res_width: int, layers: int) -> nn.Sequential:
    return nn.Sequential(*(_Residual(width, res_width) for _ in range(layers)), nn.ReLU())


class VQVAE(nn.Module):
    """Encoder, codebook and decoder. ``encode`` gives code indices (B, S/4, S/4); ``decode`` patches."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        w, c = cfg.width, cfg.channels
        self.encoder = nn.Sequential(
            nn.Conv2d(c, w // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            _residual_stack(w, cfg.res_width, cfg.res_layers),
            nn.Conv2d(w, cfg.code_dim, 1),
        )
        self.codebook = nn.Embedding(cfg.codes, cfg.code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / cfg.codes, 1.0 / cfg.codes)
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.code_dim, w, 3, padding=1),
            _residual_stack(w, cfg.res_width, cfg.res_layers),
            nn.ConvTranspose2d(w, w // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(w // 2, c, 4, stride=2, padding=1),
        )
        self.commitment = cfg.commitment

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, D, h, w) encoder output -> quantised vectors (straight-through), indices (B, h, w), VQ loss."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        e = self.codebook.weight
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t()) + e.pow(2).sum(1)[None]
        idx = dist.argmin(1)
        q = self.codebook(idx).view(b, h, w, d).permute(0, 3, 1, 2)
        loss = F.mse_loss(q, z.detach()) + self.commitment * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), idx.view(b, h, w), loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, idx, vq_loss = self.quantise(self.encoder(x))
        return self.decoder(q), idx, vq_loss

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(self.encoder(x))[1]

    @torch.inference_mode()
    def decode(self, idx: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.codebook(idx).permute(0, 3, 1, 2))


# -- the prior: a Gated PixelCNN over code grids -----------------------------------------------------
class _GatedLayer(nn.Module):
    """One layer of a Gated PixelCNN: a vertical stack (rows above) and a horizontal one (pixels to
    the left in the row; in the first layer not the pixel itself), gated tanh x sigmoid units."""

    def __init__(self, dim: int, kernel: int, first: bool):
        super().__init__()
        self.first, self.k = first, kernel // 2
        self.v = nn.Conv2d(dim, 2 * dim, (self.k + 1, kernel), padding=(self.k, self.k))
        self.v_to_h = nn.Conv2d(2 * dim, 2 * dim, 1)
        self.h = nn.Conv2d(dim, 2 * dim, (1, self.k + 1), padding=(0, self.k))
        self.h_out = nn.Conv2d(dim, dim, 1)

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, xv: torch.Tensor, xh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = xv.shape[-2:]
        v = self.v(xv)[:, :, :height]  # row i sees rows <= i
        v_down = F.pad(v, (0, 0, 1, 0))[:, :, :height]  # row i sees rows < i: what the row may use
        h = self.h(xh)[:, :, :, :width]  # column j sees columns <= j
        if self.first:  # the pixel being predicted must not see itself
            h = F.pad(h, (1, 0))[:, :, :, :width]
        out_h = self.h_out(self._gate(h + self.v_to_h(v_down)))
        return self._gate(v), out_h if self.first else xh + out_h


class GatedPixelCNN(nn.Module):
    """p(code grid) as a product of p(code at (i, j) | codes before it in raster order)."""

    def __init__(self, codes: int, dim: int, layers: int):
        super().__init__()
        self.codes = codes
        self.embed = nn.Embedding(codes, dim)
        self.layers = nn.ModuleList(_GatedLayer(dim, 7 if i == 0 else 3, first=i == 0) for i in range(layers))
        self.head = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.ReLU(), nn.Conv2d(2 * dim, codes, 1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> (B, codes, h, w) logits of each position given those before it."""
        x = self.embed(idx).permute(0, 3, 1, 2)
        xv = xh = x
        for layer in self.layers:
            xv, xh = layer(xv, xh)
        return self.head(xh)

    @torch.inference_mode()
    def sample(self, n: int, side: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` code grids (n, side, side), drawn position by position."""
        idx = torch.zeros(n, side, side, dtype=torch.long)
        for i in range(side):
            for j in range(side):
                probs = torch.softmax(self.forward(idx)[:, :, i, j].float(), dim=1)
                idx[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return idx


# -- fit, sample, save, load -----------------------------------------------------------------------
@dataclass
class VQVAEFit:
    """A fitted VQ-VAE and its prior, and how the fit went."""

    vqvae: VQVAE
    prior: GatedPixelCNN
    config: VQVAEConfig
    history: list[dict[str, float]] = field(default_factory=list)  # reconstruction and prior, per stage
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def train_vqvae(
    data: torch.Tensor,
    cfg: VQVAEConfig,
    *,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> VQVAEFit:
    """Fit the VQ-VAE on ``data`` ((N, channels, size, size) float32 in [-1, 1]), then its prior on
    the training patches' code grids. Returns both in eval mode on the CPU."""
    if data.ndim != 4 or data.shape[1:] != (cfg.channels, cfg.size, cfg.size):
        raise ValueError(f"data must be (N, {cfg.channels}, {cfg.size}, {cfg.size}), got {tuple(data.shape)}")
    if len(data) == 0:
        raise ValueError("no training patches")
    if cfg.size % 4:
        raise ValueError(f"patch side {cfg.size} is not a multiple of 4")
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)  # weight initialisation
    gen = seeding.torch_generator(cfg.seed)  # batches and augmentation
    model = VQVAE(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = data.to(dev)
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []

    # 1. The VQ-VAE: reconstruction + codebook + commitment. The codebook starts as encoder outputs of
    #    real patches, and a code no patch of a batch used for a while restarts at one (van den Oord's
    #    uniform start leaves most codes dead on a small budget).
    with torch.no_grad():
        _restart_codes(model, data, torch.ones(cfg.codes, dtype=torch.bool), gen)
    idle = torch.zeros(cfg.codes, dtype=torch.long)
    recon_sum, vq_sum, seen = 0.0, 0.0, 0
    every = max(1, cfg.steps // 20)  # history rows: 20 over the fit
    with progress_bar("vq-vae", cfg.steps, enabled=progress) as bar:
        for step in range(1, cfg.steps + 1):
            pick = torch.randint(0, len(data), (min(cfg.batch_size, len(data)),), generator=gen)
            x = data[pick]
            if cfg.augment:
                x = random_dihedral(x, gen)
            recon, idx, vq_loss = model(x)
            recon_loss = F.mse_loss(recon, x)
            opt.zero_grad(set_to_none=True)
            (recon_loss + vq_loss).backward()
            opt.step()
            used_now = torch.zeros(cfg.codes, dtype=torch.bool)
            used_now[idx.unique()] = True
            idle = torch.where(used_now, 0, idle + 1)
            if cfg.restart_after and step % cfg.restart_after == 0 and step < 0.9 * cfg.steps:
                with torch.no_grad():
                    _restart_codes(model, data, idle >= cfg.restart_after, gen)
            recon_sum, vq_sum = recon_sum + float(recon_loss.detach()), vq_sum + float(vq_loss.detach())
            seen += 1
            if step % every == 0 or step == cfg.steps:
                history.append({"step": step, "recon": recon_sum / seen, "vq": vq_sum / seen})
                recon_sum, vq_sum, seen = 0.0, 0.0, 0
            bar.advance()
    model.eval()

    # 2. The prior over the training patches' code grids (every flip and turn: 8 grids per patch).
    grids = torch.cat([model.encode(_turned(data, t)) for t in range(8 if cfg.augment else 1)]).cpu()
    used = int(torch.unique(grids).numel())
    if used < 2:
        warning = f"only {used} of {cfg.codes} codes are in use: the VQ-VAE collapsed; samples will all look alike"
        log(f"vqvae: warning: {warning}")
    prior = GatedPixelCNN(cfg.codes, cfg.prior_width, cfg.prior_layers)
    popt = torch.optim.Adam(prior.parameters(), lr=cfg.prior_lr)
    every, total, n = max(1, cfg.prior_steps // 10), 0.0, 0
    with progress_bar("vq-vae prior", cfg.prior_steps, enabled=progress) as bar:
        for step in range(1, cfg.prior_steps + 1):
            idx = grids[torch.randint(0, len(grids), (min(cfg.batch_size, len(grids)),), generator=gen)]
            loss = F.cross_entropy(prior(idx), idx)
            popt.zero_grad(set_to_none=True)
            loss.backward()
            popt.step()
            total, n = total + float(loss.detach()), n + 1
            if step % every == 0 or step == cfg.prior_steps:
                history.append({"prior_step": step, "prior_nll": total / n})
                total, n = 0.0, 0
            bar.advance()
    prior.eval()
    result = VQVAEFit(model.cpu(), prior, cfg, history, time.perf_counter() - t0)
    if used < 2:
        result.warnings.append(warning)
    result.history.append({"codes_used": used})
    return result


def _restart_codes(model: VQVAE, data: torch.Tensor, dead: torch.Tensor, gen: torch.Generator) -> None:
    """Move the ``dead`` codes onto encoder outputs of randomly drawn real patches."""
    n = int(dead.sum())
    if n == 0:
        return
    pick = torch.randint(0, len(data), (min(len(data), 64),), generator=gen)
    z = model.encoder(data[pick]).permute(0, 2, 3, 1).reshape(-1, model.codebook.embedding_dim)
    rows = torch.randint(0, len(z), (n,), generator=gen)
    model.codebook.weight.data[dead] = z[rows]


def _turned(x: torch.Tensor, t: int) -> torch.Tensor:
    x = torch.rot90(x, t % 4, dims=(-2, -1))
    return x.flip(-1) if t >= 4 else x


@torch.inference_mode()
def sample_vqvae(fit: VQVAEFit, n: int, *, seed: int, batch_size: int = 512) -> np.ndarray:
    """``n`` new patches: (n, channels, size, size) float32, in [-1, 1] up to the decoder's overshoot."""
    cfg = fit.config
    if n == 0:
        return np.zeros((0, cfg.channels, cfg.size, cfg.size), np.float32)
    gen = seeding.torch_generator(seed)
    out = []
    for start in range(0, n, batch_size):
        grid = fit.prior.sample(min(batch_size, n - start), cfg.size // 4, gen)
        out.append(fit.vqvae.decode(grid).clamp(-1.0, 1.0).numpy())
    return np.concatenate(out).astype(np.float32)


def save_vqvae(fit: VQVAEFit, path: Path, meta: dict | None = None) -> None:
    """Write the models' weights and configuration (loadable without pickle) and their checksum."""
    blob = {"config": asdict(fit.config), "vqvae": fit.vqvae.state_dict(), "prior": fit.prior.state_dict()}
    save_weights(path, blob | {"meta": meta or {}})


def load_vqvae(path: Path) -> tuple[VQVAEFit, dict]:
    """Read what :func:`save_vqvae` wrote; DataError when it is changed or not a VQ-VAE of this version."""

    def build(blob: dict) -> tuple[VQVAEFit, dict]:
        cfg = VQVAEConfig(**blob["config"])
        model, prior = VQVAE(cfg), GatedPixelCNN(cfg.codes, cfg.prior_width, cfg.prior_layers)
        model.load_state_dict(blob["vqvae"])
        prior.load_state_dict(blob["prior"])
        return VQVAEFit(model.eval(), prior.eval(), cfg), dict(blob["meta"])

    return load_weights(path, build, what="VQ-VAE")
