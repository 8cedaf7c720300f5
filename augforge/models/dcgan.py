"""DCGAN for tumour patches: the networks, the training loop, checkpoints and sample grids.

References:
    Radford, Metz, Chintala (2016), "Unsupervised representation learning with deep convolutional
    generative adversarial networks" -- the architecture family.
    The seed paper's protocol (reference/PAPER_PROTOCOL.md, "DCGAN"): latent 128; generator
    ConvTranspose 4x4 512-256-128-64 -> 1x64x64 with BatchNorm+ReLU and Tanh (3,804,032 parameters);
    discriminator Conv 4x4 stride 2 64-128-256-512 -> 1 with BatchNorm+LeakyReLU(0.2) on every
    hidden layer and a Sigmoid (2,763,648 parameters); BCE; Adam 2e-4, betas (0.5, 0.999); batch 128;
    300 epochs. ``Generator(latent_dim=128, width=64, size=64, channels=1)`` and
    ``Discriminator(width=64, size=64, channels=1)`` are exactly those networks.

The discriminator returns logits; its Sigmoid is applied inside ``BCEWithLogitsLoss``, which is the
same function as Sigmoid followed by ``BCELoss`` but does not overflow when D is confident.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from augforge import seeding
from augforge.fileio import atomic_write_with
from augforge.models.weights import load_weights, save_weights
from augforge.progress import bar as progress_bar

__all__ = [
    "DCGANConfig",
    "Discriminator",
    "FitResult",
    "Generator",
    "image_grid",
    "load_generator",
    "sample",
    "save_generator",
    "train_dcgan",
    "write_png",
]

#: How the generator doubles its resolution (see ``Generator._up``).
UPSAMPLING = ("transposed", "nearest", "bilinear")
#: When D's mean loss over an epoch comes this close to its floor, D has won and G gets no useful
#: gradient.
D_LOSS_COLLAPSE = 0.01
#: Below this ratio of sample spread to data spread, the generator has (nearly) collapsed to one mode.
DIVERSITY_COLLAPSE = 0.1


def _stages(size: int) -> int:
    """Number of stride-2 stages between 4x4 and ``size`` x ``size`` (4 for 64, 3 for 32)."""
    if size < 8 or size & (size - 1):
        raise ValueError(f"DCGAN patch size must be a power of two >= 8, got {size}")
    return int(math.log2(size)) - 2


class Generator(nn.Module):
    """z (N, latent_dim, 1, 1) -> patches (N, channels, size, size) in [-1, 1].

    Hidden widths halve from ``width * 2**(stages-1)`` down to ``width`` (512-256-128-64 for the
    paper's width 64 at size 64).
    """

    def __init__(
        self, latent_dim: int = 128, width: int = 64, size: int = 64, channels: int = 1, upsample: str = "transposed"
    ):
        super().__init__()
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
        self.latent_dim, self.width, self.size, self.channels = latent_dim, width, size, channels
        self.upsample = upsample
        n = _stages(size)
        widths = [width * 2 ** (n - 1 - i) for i in range(n)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [self._up(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [self._up(widths[-1], channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def _up(self, c_in: int, c_out: int) -> nn.Module:
        """Double the resolution: a 4x4 stride-2 transposed convolution (DCGAN), or a fixed
        nearest/bilinear upsampling and a 3x3 convolution, which cannot make the transposed
        convolution's checkerboard artefacts (Odena et al. 2016, "Deconvolution and checkerboard
        artifacts")."""
        if self.upsample == "transposed":
            return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)
        return nn.Sequential(
            nn.Upsample(
                scale_factor=2, mode=self.upsample, **({"align_corners": False} if self.upsample == "bilinear" else {})
            ),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """Patches (N, channels, size, size) -> logits (N,): high means "real".

    Widths double from ``width`` (64-128-256-512 for the paper's width 64 at size 64); every hidden
    layer has BatchNorm, the first included (that is what makes the paper's 2,763,648 parameters).
    """

    def __init__(self, width: int = 64, size: int = 64, channels: int = 1):
        super().__init__()
        self.width, self.size, self.channels = width, size, channels
        n = _stages(size)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(n):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c_in = c_out
        layers += [nn.Conv2d(c_in, 1, 4, 1, 0, bias=False)]  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def _init_weights(m: nn.Module) -> None:
    # DCGAN's initialisation: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@dataclass
class DCGANConfig:
    """Everything that decides a fit. Two fits with equal configs and data give equal generators."""

    size: int = 64  # patch side in pixels (a power of two)
    channels: int = 1  # 1 = HU only (paper); 2 = HU and mask together
    upsample: str = "transposed"  # generator up-sampling: "transposed" (paper), "nearest" or "bilinear"
    latent_dim: int = 128
    width: int = 64
    epochs: int = 300
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    real_label: float = 1.0  # < 1 is one-sided label smoothing (Salimans et al. 2016)
    augment: bool = False  # random flips and 90-degree turns of the real patches
    seed: int = 0
    sample_every: int = 0  # also write a sample grid every N epochs (the final one is always written)
    checkpoint_every: int = 10  # epochs between checkpoints (the last epoch is always saved)


@dataclass
class FitResult:
    generator: Generator
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the epochs run in this call (0 when fully resumed)
    resumed_from: int = 0  # epochs that were already done in a checkpoint


def _dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random element of the 8 flips/turns per patch: nodules have no preferred orientation."""
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)
    flip = torch.randint(0, 2, (x.shape[0],), generator=gen).bool()
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    out = torch.empty_like(x)
    for turns in range(4):
        sel = k == turns
        if sel.any():
            out[sel] = torch.rot90(x[sel], turns, dims=(-2, -1))
    return out


def _diversity(x: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across the batch: 0 when all samples are equal."""
    return float(x.float().std(dim=0).mean())


def _fit_identity(config: dict) -> dict:
    # A checkpoint may be extended to more epochs, and grids/checkpoints may come more or less often.
    return {k: v for k, v in config.items() if k not in ("epochs", "sample_every", "checkpoint_every")}


def _save_atomic(obj: dict, path: Path) -> None:
    # A fit killed mid-write must leave the previous checkpoint readable.
    atomic_write_with(path, lambda f: torch.save(obj, f))


def train_dcgan(
    data: torch.Tensor,
    cfg: DCGANConfig,
    *,
    out_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    to_display: Callable[[np.ndarray], np.ndarray] | None = None,
) -> FitResult:
    """Fit a DCGAN on ``data`` and return the trained generator (in eval mode, on the CPU).

    data:       (N, cfg.channels, cfg.size, cfg.size) float32 in [-1, 1], the real patches.
    out_dir:    where checkpoints (``checkpoint.pt``) and sample grids (``samples/epoch-NNNN.png``,
                the last epoch's always) go; a fit finding a checkpoint there resumes from it.
                None: no checkpoints, no grids.
    to_display: maps generated patches (n, channels, size, size) in [-1, 1] to grey images
                (n, H, W) in [0, 1] for the sample grids; default: channel 0 rescaled.
    log:        where the collapse warnings and resume notes go.
    """
    if data.ndim != 4 or data.shape[1:] != (cfg.channels, cfg.size, cfg.size):
        raise ValueError(f"data must be (N, {cfg.channels}, {cfg.size}, {cfg.size}), got {tuple(data.shape)}")
    if len(data) == 0:
        raise ValueError("no training patches")
    to_display = to_display or (lambda x: (x[:, 0] + 1) / 2)
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)  # weight initialisation
    gen_rng = seeding.torch_generator(cfg.seed)  # shuffling, noise, augmentation
    G = Generator(cfg.latent_dim, cfg.width, cfg.size, cfg.channels, cfg.upsample)
    D = Discriminator(cfg.width, cfg.size, cfg.channels)
    G.apply(_init_weights)
    D.apply(_init_weights)
    # Channels-last runs these small convolutions ~1.4x faster on CPU (oneDNN) and suits tensor cores.
    G = G.to(dev, memory_format=torch.channels_last)
    D = D.to(dev, memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    bce = nn.BCEWithLogitsLoss()
    fixed_z = torch.randn(64, cfg.latent_dim, 1, 1, generator=gen_rng).to(dev)
    # With a smoothed real label r, D's loss cannot fall below the entropy of r (0 when r = 1).
    r = cfg.real_label
    loss_floor = 0.0 if r >= 1.0 else -(r * math.log(r) + (1 - r) * math.log(1 - r))
    data_spread = _diversity(data[torch.randperm(len(data), generator=gen_rng)[:256]])

    # 0. resume: a checkpoint holds the networks, the optimisers, the random state and the history.
    result = FitResult(generator=G)
    start = 0
    ckpt_path = out_dir / "checkpoint.pt" if out_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=True)
        if _fit_identity(ckpt["config"]) != _fit_identity(asdict(cfg)) or ckpt["epoch"] > cfg.epochs:
            log(f"dcgan: checkpoint {ckpt_path} is from another configuration; starting afresh")
        else:
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
            opt_g.load_state_dict(ckpt["opt_g"])
            opt_d.load_state_dict(ckpt["opt_d"])
            gen_rng.set_state(ckpt["rng"])
            result.history = list(ckpt["history"])
            result.warnings = list(ckpt["warnings"])
            start = int(ckpt["epoch"])
            result.resumed_from = start
            if start:
                log(f"dcgan: resuming from epoch {start}/{cfg.epochs} ({ckpt_path})")
    if out_dir is not None:
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)

    batch = min(cfg.batch_size, len(data))
    steps = len(data) // batch  # drop the last partial batch: BatchNorm on 1 sample is degenerate
    warned: set[str] = {w.split(":")[0] for w in result.warnings}
    t0 = time.perf_counter()
    with progress_bar(
        "dcgan", (cfg.epochs - start) * steps, enabled=progress, fields={"stats": ""}, columns=["{task.fields[stats]}"]
    ) as bar:
        for epoch in range(start, cfg.epochs):
            G.train()
            D.train()
            sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
            order = torch.randperm(len(data), generator=gen_rng)
            for step in range(steps):
                real = data[order[step * batch : (step + 1) * batch]]
                if cfg.augment:
                    real = _dihedral(real, gen_rng)
                real = real.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
                z = torch.randn(len(real), cfg.latent_dim, 1, 1, generator=gen_rng).to(dev)
                ones = torch.full((len(real),), cfg.real_label, device=dev)
                zeros = torch.zeros(len(real), device=dev)

                # 1. update D: maximise log D(x) + log(1 - D(G(z)))
                fake = G(z)
                out_real = D(real)
                out_fake = D(fake.detach())
                loss_d = bce(out_real, ones) + bce(out_fake, zeros)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()

                # 2. update G: maximise log D(G(z)) (the non-saturating form of the minimax game)
                out_gen = D(fake)
                loss_g = bce(out_gen, torch.ones(len(real), device=dev))
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()

                # 3. statistics: D(x) near 1 and D(G(z)) near 0 means D is winning
                now = {
                    "loss_d": loss_d.item(),
                    "loss_g": loss_g.item(),
                    "d_real": torch.sigmoid(out_real.detach()).mean().item(),
                    "d_fake": torch.sigmoid(out_fake.detach()).mean().item(),
                }
                for k, v in now.items():
                    sums[k] += v
                if bar.shown:
                    bar.advance(
                        1,
                        stats=(
                            f"epoch {epoch + 1}/{cfg.epochs} loss D {now['loss_d']:.2f} G {now['loss_g']:.2f}"
                            f" D(x) {now['d_real']:.2f} D(G(z)) {now['d_fake']:.2f}"
                        ),
                    )

            # 4. end of epoch: record, look for collapse, write a grid and a checkpoint
            row = {k: v / steps for k, v in sums.items()}
            G.eval()
            with torch.inference_mode():
                samples = G(fixed_z)
            row["diversity"] = _diversity(samples) / max(data_spread, 1e-8)
            row["epoch"] = epoch + 1
            result.history.append(row)
            # An untrained generator is not diverse yet: judge collapse after a tenth of the fit.
            judge = epoch + 1 >= max(2, cfg.epochs // 10)
            for kind, bad, msg in (
                (
                    "d-loss",
                    judge and row["loss_d"] - loss_floor < D_LOSS_COLLAPSE,
                    (
                        f"discriminator loss {row['loss_d']:.4f} at its floor at epoch {epoch + 1}: D has won "
                        "and G learns nothing; try fewer epochs, a smaller dcgan.width or more data"
                    ),
                ),
                (
                    "diversity",
                    judge and row["diversity"] < DIVERSITY_COLLAPSE,
                    (
                        f"sample diversity {row['diversity']:.3f} of the data's at epoch {epoch + 1}: the "
                        "generator is collapsing to a few outputs; try another dcgan.gen_seed or fewer epochs"
                    ),
                ),
            ):
                if bad and kind not in warned:
                    warned.add(kind)
                    result.warnings.append(f"{kind}: {msg}")
                    log(f"warning: dcgan {msg}")
            last = epoch + 1 == cfg.epochs
            if out_dir is not None and (last or (cfg.sample_every and (epoch + 1) % cfg.sample_every == 0)):
                write_png(
                    out_dir / "samples" / f"epoch-{epoch + 1:04d}.png", image_grid(to_display(samples.cpu().numpy()))
                )
            if ckpt_path is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
                ckpt_path.parent.mkdir(parents=True, exist_ok=True)
                _save_atomic(
                    {
                        "config": asdict(cfg),
                        "epoch": epoch + 1,
                        "G": G.state_dict(),
                        "D": D.state_dict(),
                        "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(),
                        "rng": gen_rng.get_state(),
                        "history": result.history,
                        "warnings": result.warnings,
                    },
                    ckpt_path,
                )
    result.seconds = time.perf_counter() - t0 if start < cfg.epochs else 0.0
    result.generator = G.cpu().eval()
    return result


@torch.inference_mode()
def sample(generator: Generator, n: int, *, seed: int, batch_size: int = 256) -> np.ndarray:
    """Draw ``n`` patches: (n, channels, size, size) float32 in [-1, 1]. Same seed, same patches."""
    rng = seeding.torch_generator(seed)
    generator.eval()
    device = next(generator.parameters()).device
    out = []
    for start in range(0, n, batch_size):
        k = min(batch_size, n - start)
        z = torch.randn(k, generator.latent_dim, 1, 1, generator=rng).to(device)
        out.append(generator(z).float().cpu().numpy())
    if not out:
        return np.zeros((0, generator.channels, generator.size, generator.size), np.float32)
    return np.concatenate(out)


def save_generator(generator: Generator, path: Path, meta: dict | None = None) -> None:
    """Write the generator's weights and shape (plain tensors and numbers: loadable without pickle),
    then ``<path>.sha256``, the file's checksum that :func:`load_generator` verifies."""
    blob = {
        "latent_dim": generator.latent_dim,
        "width": generator.width,
        "size": generator.size,
        "channels": generator.channels,
        "upsample": generator.upsample,
        "state": generator.state_dict(),
        "meta": meta or {},
    }
    save_weights(path, blob)


def load_generator(path: Path) -> tuple[Generator, dict]:
    """Read a generator written by :func:`save_generator` (``weights_only``: no code is unpickled).

    Raises DataError when the file does not match the checksum written beside it (changed, damaged,
    or written by something else) or cannot be read as a generator; delete it to fit again."""

    def build(blob: dict) -> tuple[Generator, dict]:
        g = Generator(blob["latent_dim"], blob["width"], blob["size"], blob["channels"], blob["upsample"])
        g.load_state_dict(blob["state"])
        return g.eval(), dict(blob["meta"])

    return load_weights(path, build, what="generator")


def image_grid(images: np.ndarray, ncols: int = 8, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile (n, H, W) images in [0, 1] into one (rows*(H+pad)+pad, ncols*(W+pad)+pad) image."""
    n, h, w = images.shape
    ncols = max(1, min(ncols, n))
    rows = max(1, -(-n // ncols))
    grid = np.full((rows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value, np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return grid


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a (H, W) grey or (H, W, 3) RGB image in [0, 1] as an 8-bit PNG."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    img8 = np.round(img * 255).astype(np.uint8)
    if img8.ndim == 3:
        img8 = img8[..., ::-1]  # OpenCV writes BGR
    if not cv2.imwrite(str(path), img8):
        raise OSError(f"could not write {path}")
