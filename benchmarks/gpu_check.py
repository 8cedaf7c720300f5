"""The GPU check: what the `paper` preset and the generators cost on a CUDA machine, in one short run.

Measures, on the first CUDA device (or on the CPU with ``--smoke``, at tiny sizes, to check that the
script itself works):

1. the paper preset's U-Net (VGG11 encoder, 512x512, batch 6, SGD, soft Dice): time per training
   step with mixed precision on and off, the epoch time that gives for the paper's 708 training
   slices, and the projected trial (40 epochs plus the evaluation of 264 test slices);
2. the paper's DCGAN (64x64, batch 128): real patches per second through a full fit step;
3. the VQ-VAE of the paper preset (64x64, batch 16): updates per second, and its projected fit;
4. a tiny study end to end (`augforge bench --preset tiny --strategy flip`, the harness on this
   machine), its wall time;
5. on a GPU only, the README's main job (`augforge bench --strategy dcgan`, the `quick` preset on the
   embedded data) with an empty cache: its wall time and the two strategies' Dice, to compare with
   the CPU figures (the same seeds; a GPU's arithmetic differs, so the digits may too).

The networks train on random tensors of the right shapes: the cost of a step does not depend on
what the pixels are, and no dataset has to be built. Prints one JSON object (and writes it to
``--out`` when given) with the device named; each part is skipped with a reason rather than failing
the rest. Sized to finish in well under 8 minutes on a recent GPU.

    python benchmarks/gpu_check.py --out gpu.json        # on a CUDA machine
    python benchmarks/gpu_check.py --smoke                # anywhere: tiny sizes on the CPU
    python benchmarks/gpu_check.py --cpu                  # the full sizes on this CPU, few steps each

``--cpu`` answers what the paper preset would cost without a GPU: the same parts at full size on
the CPU, each timed over a few steps (mixed precision is a no-op there and is not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any


def _machine(device: Any) -> dict[str, Any]:
    """What ran the check: CPU model and cores, RAM, the GPU's memory and driver, Python and numpy."""
    import os

    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    out: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    with contextlib.suppress(ValueError, OSError, AttributeError):
        out["ram_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    if device.type == "cuda":
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        try:
            smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            out["driver"] = subprocess.run(smi, capture_output=True, text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            out["driver"] = None
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, device: Any, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (the device synchronised around the timing)."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _steps(device: Any, smoke: bool, on_gpu: int) -> int:
    """Timed steps of a part: ``on_gpu`` on a GPU, a few on the CPU (full sizes take seconds each)."""
    return 3 if smoke or device.type != "cuda" else on_gpu


def unet_paper(device: Any, smoke: bool) -> dict[str, Any]:
    import torch

    from augforge.config import get_preset
    from augforge.models import build_model
    from augforge.train.loop import _autocast, make_optimizer
    from augforge.train.losses import get_loss

    preset = get_preset("paper")
    cfg, side = preset.train, (64 if smoke else preset.data.size)
    model = build_model(preset.model).to(device, memory_format=torch.channels_last).train()
    opt = make_optimizer(model.parameters(), cfg)
    loss_fn = get_loss(cfg.loss)
    x = torch.rand(cfg.batch_size, 1, side, side, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand_like(x) > 0.9).float()
    out: dict[str, Any] = {"side": side, "batch_size": cfg.batch_size, "arch": preset.model.arch}
    for amp in (False, True) if device.type == "cuda" else (False,):
        autocast, scaler = _autocast(device, amp)

        def step(autocast=autocast, scaler=scaler) -> None:
            with autocast:
                logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()

        out[f"step_ms_amp_{'on' if amp else 'off'}"] = round(
            1000 * _time_steps(step, device, 1 if device.type != "cuda" else 2, _steps(device, smoke, 20)), 2
        )
    steps_per_epoch = -(-preset.data.n_train // cfg.batch_size)  # the paper's 708 slices, batch 6
    best = min(out.get("step_ms_amp_on", out["step_ms_amp_off"]), out["step_ms_amp_off"]) / 1000
    with torch.inference_mode():
        model.eval()
        xe = torch.rand(cfg.eval_batch_size, 1, side, side, device=device).contiguous(memory_format=torch.channels_last)
        eval_s = _time_steps(lambda: model(xe), device, 1, _steps(device, smoke, 5)) * -(-preset.data.n_test // len(xe))
    out |= {
        "steps_per_epoch": steps_per_epoch,
        "epoch_s": round(best * steps_per_epoch, 2),
        "projected_trial_s": round(best * steps_per_epoch * cfg.epochs + eval_s, 1),
        "amp_speedup": round(out["step_ms_amp_off"] / out["step_ms_amp_on"], 2) if "step_ms_amp_on" in out else None,
    }
    return out


def dcgan_paper(device: Any, smoke: bool) -> dict[str, Any]:
    import torch

    from augforge.models.dcgan import Discriminator, Generator

    size, batch, latent = 64, (16 if smoke else 128), 128
    G = Generator(latent, 64, size, 1).to(device)
    D = Discriminator(64, size, 1).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    real = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)

    def step() -> None:
        z = torch.randn(batch, latent, 1, 1, device=device)
        fake = G(z)
        d_loss = bce(D(real), ones) + bce(D(fake.detach()), zeros)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = bce(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    seconds = _time_steps(step, device, 2, _steps(device, smoke, 30))
    # The paper's fit: 300 epochs over its 708 tumour patches.
    return {
        "batch_size": batch,
        "fit_img_per_s": round(batch / seconds, 1),
        "paper_fit_projected_s": round(300 * 708 / (batch / seconds), 1),
    }


def vqvae_paper(device: Any, smoke: bool) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from augforge.models.vqvae import VQVAE, VQVAEConfig

    cfg = VQVAEConfig(width=32 if smoke else 256)
    model = VQVAE(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.rand(cfg.batch_size, cfg.channels, cfg.size, cfg.size, device=device) * 2 - 1

    def step() -> None:
        recon, _, vq_loss = model(x)
        loss = F.mse_loss(recon, x) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = _time_steps(step, device, 2, _steps(device, smoke, 50))
    return {"updates_per_s": round(1 / seconds, 1), "vqvae_fit_projected_s": round(cfg.steps * seconds, 1)}


def fit_repeat(device: Any, smoke: bool) -> dict[str, Any]:
    """Is a DCGAN fit repeatable on this device? Two short fits (the same seed and patches) with torch's
    deterministic algorithms on, as augforge fits generators, and two with them off; for each pair,
    whether the generators' weights are bit-identical and their largest difference."""
    import torch

    from augforge.models.dcgan import DCGANConfig, train_dcgan
    from augforge.seeding import deterministic, torch_generator

    cfg = DCGANConfig(size=64, channels=2, epochs=1 if smoke else 3, batch_size=16 if smoke else 128, seed=0)
    n = 64 if smoke else 768
    data = torch.rand(n, 2, 64, 64, generator=torch_generator(1)) * 2 - 1

    def fit() -> list[Any]:
        g = train_dcgan(data, cfg, device=device.type, progress=False, log=lambda _m: None).generator
        return [t.detach().cpu().clone() for t in g.state_dict().values()]

    out: dict[str, Any] = {"epochs": cfg.epochs, "patches": n}
    for mode in ("on", "off"):
        with deterministic(mode == "on"):
            a, b = fit(), fit()
        diff = max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))
        out[f"deterministic_{mode}"] = {"identical": all(torch.equal(x, y) for x, y in zip(a, b)), "max_abs_diff": diff}
    return out


def tiny_study(device: Any, smoke: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "augforge", "bench", "--preset", "tiny", "--strategy", "flip"]
        argv += ["--out", str(Path(tmp) / "run"), "--no-progress", "--no-samples"]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    return {"wall_s": round(wall, 1), "trials": 2}


def main_job(device: Any, smoke: bool) -> dict[str, Any]:
    """The README's main job from an empty cache: wall time, and each strategy's Dice from the leaderboard."""
    import csv
    import os

    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"AUGFORGE_CACHE": str(Path(tmp) / "cache")}
        run = Path(tmp) / "run"
        argv = [sys.executable, "-m", "augforge", "bench", "--strategy", "dcgan", "--out", str(run), "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        with open(run / "leaderboard.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        trials = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines() if line.strip()]
    out: dict[str, Any] = {"wall_s": round(wall, 1)}
    for row in rows:
        out[row["strategy"]] = {
            "dice": round(float(row["dice_mean"]), 4),
            "ci95": [round(float(row["dice_ci95_low"]), 4), round(float(row["dice_ci95_high"]), 4)],
            "p_vs_baseline": float(row["p_value_vs_baseline"]) if row["p_value_vs_baseline"] else None,
        }
    out["trial_s"] = {t["strategy"]: t["timings_s"] for t in trials}
    out["trial_device"] = sorted({t["device_name"] for t in trials})
    out["cuda_peak_mb"] = {t["strategy"]: t["memory"].get("cuda_peak_mb") for t in trials}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, on the CPU if no GPU: checks the script")
    ap.add_argument(
        "--cpu", action="store_true", help="full sizes on the CPU, a few steps each: the cost without a GPU"
    )
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument(
        "--only",
        action="append",
        choices=["unet_paper", "dcgan_paper", "vqvae_paper", "fit_repeat", "tiny_study", "main_job"],
        help="run only this part (repeatable)",
    )
    ap.add_argument("--no-main-job", action="store_true", help="on a GPU, skip the README's main job (part 5)")
    args = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not (args.smoke or args.cpu):
        print("gpu_check: no CUDA device here; run it on a GPU machine, or with --smoke or --cpu", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or 'unknown'})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "smoke": args.smoke,
        "threads": None if cuda else torch.get_num_threads(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(device),
    }
    parts = (
        ("unet_paper", unet_paper),
        ("dcgan_paper", dcgan_paper),
        ("vqvae_paper", vqvae_paper),
        ("fit_repeat", fit_repeat),
    )
    for name, part in parts:
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            result[name] = part(device, args.smoke) | {"seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # noqa: BLE001 -- one part's failure is recorded, the others still run
            result[name] = {"skipped": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3)}
        if cuda:
            torch.cuda.empty_cache()
    if not args.only or "tiny_study" in args.only:
        try:
            result["tiny_study"] = tiny_study(device, args.smoke)
        except Exception as exc:  # noqa: BLE001 -- as above
            result["tiny_study"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    if cuda and not args.no_main_job and (not args.only or "main_job" in args.only):
        try:
            result["main_job"] = main_job(device, args.smoke)
        except Exception as exc:  # noqa: BLE001 -- as above
            result["main_job"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
