"""Training step time of augforge's plain U-Net against MONAI's ``UNet`` of equal width and depth.

Both networks get the preset's training batch (``train.batch_size`` x 1 x side x side, side =
``train.patch_size`` or the slice size), memory format, loss and optimiser, and run full steps
(forward, loss, backward, optimiser update) on the same fixed batch, so the data pipeline is left
out and only the network differs. MONAI's network is ``monai.networks.nets.UNet(spatial_dims=2,
channels=(w, 2w, ..., w * 2**depth), strides=(2,) * depth, num_res_units=2, norm="batch",
act="relu")``: the same widths, the same number of down-sampling steps, two 3x3 convolutions per
encoder level (as augforge's ``DoubleConv``), BatchNorm and ReLU. It differs in what MONAI chose:
each level's first convolution has stride 2 (so each width runs at half the resolution it has in
augforge's network), one convolution per decoder level after a transposed convolution, residual
units. So the two do not count the same FLOPs (quick preset: 2.6 GFLOP per step for MONAI's, 10.2
for augforge's); both counts are printed, and the comparison is given per step and per FLOP.

Timing: after warm-up steps, ``--rounds`` rounds each time ``--steps`` steps of one network then of
the other, alternating which goes first; per-step times are medians over rounds, so a burst of load
from other processes hits both alike.

MONAI is a benchmark-only dependency (``pip install --no-deps monai``: its only requirements,
torch and numpy, are already there). When it is missing or does not import beside this torch, the
script prints ``{"available": false, "reason": ...}`` and exits 0, so a suite run goes on.

    python benchmarks/bench_unet_monai.py                 # quick preset: 16 x 1 x 96 x 96, width 8, depth 4
    python benchmarks/bench_unet_monai.py --preset tiny --steps 2 --rounds 2

``--dice`` answers the other half of the question, what each network reaches: augforge's network,
MONAI's as above ("matched": BatchNorm and ReLU) and MONAI's with its own defaults (instance norm,
PReLU: what a user who picks it gets) are trained exactly as a baseline trial trains (the preset's
loop, steps, patches, optimiser and seed) on the dataset's training split, then score every test
image whole. Printed: each network's mean Dice, final training loss and training time per seed,
and each MONAI variant's minus augforge's per-image Dice with its 95% hierarchical bootstrap
interval and p values (augforge.bench.stats, as in the reports).

    python benchmarks/bench_unet_monai.py --dice [--data PATH] [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any


def monai_unet(base_width: int, depth: int, num_res_units: int, layers: str = "matched") -> Any:
    """MONAI's 2-D U-Net with widths ``base_width * 2**i`` for i = 0..depth and ``depth`` strides of 2.

    layers: "matched" (BatchNorm and ReLU, as augforge's network) or "defaults" (MONAI's own choice,
    instance norm and PReLU, what a user who picks MONAI's UNet gets)."""
    from monai.networks.nets import UNet

    kinds = {"matched": {"norm": "batch", "act": "relu"}, "defaults": {}}
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=tuple(base_width * 2**i for i in range(depth + 1)),
        strides=(2,) * depth,
        num_res_units=num_res_units,
        **kinds[layers],
    )


def dice_comparison(
    preset: Any, seeds: int, num_res_units: int, monai_version: str, monai_epochs: int = 0
) -> dict[str, Any]:
    """Both networks trained as a baseline trial trains them, seed by seed; per-image test Dice compared."""
    from dataclasses import replace

    import numpy as np
    import torch

    from augforge.bench.stats import bootstrap_mean, compare_paired
    from augforge.data.sources import load_dataset
    from augforge.models import build_model, count_parameters
    from augforge.seeding import seed_everything
    from augforge.train import plan_steps, train_model
    from augforge.train.evaluate import evaluate

    cfg = preset.train
    dataset = load_dataset(preset.data, progress=False)
    images = [s.image for s in dataset.train]
    masks = [s.mask for s in dataset.train]
    makers = {
        "augforge": lambda: build_model(preset.model),
        "monai": lambda: monai_unet(preset.model.base_width, preset.model.depth, num_res_units),
        "monai-defaults": lambda: monai_unet(preset.model.base_width, preset.model.depth, num_res_units, "defaults"),
    }
    dice: dict[str, list[list[float]]] = {name: [] for name in makers}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in makers}
    for seed in range(seeds):
        for name, make in makers.items():
            seed_everything(seed)
            net = make()
            run_cfg = cfg if name == "augforge" or not monai_epochs else replace(cfg, epochs=monai_epochs)
            result = train_model(net, images, masks, run_cfg, seed=seed, progress=False)
            rows = evaluate(net, dataset.test, cfg)
            dice[name].append([r["dice"] for r in rows])
            runs[name].append(
                {
                    "seed": seed,
                    "dice": round(float(np.mean(dice[name][-1])), 4),
                    "train_s": round(result.seconds, 1),
                    "final_loss": round(result.final_loss, 4),
                    "steps": result.steps,
                    "step_ms": round(1e3 * result.seconds / result.steps, 1),
                }
            )
    ours = np.array(dice["augforge"])
    est = {name: bootstrap_mean(np.array(v)) for name, v in dice.items()}
    diffs = {name: compare_paired(np.array(dice[name]), ours) for name in makers if name != "augforge"}
    return {
        "available": True,
        "mode": "dice",
        "preset": preset.name,
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "n_train": len(images),
            "n_test": len(dataset.test),
        },
        "steps": plan_steps(cfg, len(images))[1],
        "threads": torch.get_num_threads(),
        "parameters": {name: count_parameters(make()) for name, make in makers.items()},
        "monai_num_res_units": num_res_units,
        "runs": runs,
        "dice": {name: [round(e.mean, 4), round(e.low, 4), round(e.high, 4)] for name, e in est.items()},
        "minus_augforge": {
            name: {
                "delta": round(d.delta, 4),
                "ci95": [round(d.low, 4), round(d.high, 4)],
                "p_wilcoxon": d.p_wilcoxon,
                "p_bootstrap": d.p_bootstrap,
            }
            for name, d in diffs.items()
        },
        # > 1: the MONAI network trains faster than augforge's
        "train_time_ratio": {
            name: round(sum(r["train_s"] for r in runs["augforge"]) / sum(r["train_s"] for r in runs[name]), 3)
            for name in diffs
        },
        "load_average_1min": round(os.getloadavg()[0], 2),
        "versions": {"monai": monai_version, "torch": torch.__version__, "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per network per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per network first")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: the preset's train.threads, as a trial uses)"
    )
    ap.add_argument("--num-res-units", type=int, default=2, help="MONAI's residual units per level")
    ap.add_argument("--dice", action="store_true", help="train both networks as a trial does and score the test set")
    ap.add_argument("--data", default="", help="with --dice: dataset path or name (default: the preset's)")
    ap.add_argument("--seeds", type=int, default=1, help="with --dice: seeds 0..N-1")
    ap.add_argument(
        "--monai-epochs",
        type=int,
        default=0,
        help="with --dice: train the MONAI networks this many epochs (0: the preset's), e.g. for equal training time",
    )
    args = ap.parse_args(argv)

    try:
        import monai
        from monai.networks.nets import UNet as _  # the import that fails on a torch mismatch
    # Not only ImportError: MONAI can raise anything while importing against an unexpected torch.
    except Exception as exc:  # noqa: BLE001
        print(
            json.dumps(
                {
                    "available": False,
                    "reason": f"MONAI does not import: {type(exc).__name__}: {exc}",
                    "install": "pip install --no-deps monai",
                },
                indent=2,
            )
        )
        return 0

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from augforge.config import get_preset
    from augforge.models import build_model, count_parameters
    from augforge.seeding import seed_everything
    from augforge.train import get_loss, make_optimizer

    preset = get_preset(args.preset)
    if args.data:
        from augforge.config import apply_overrides

        preset = apply_overrides(preset, {"data.source": args.data})
    if preset.model.arch != "unet":
        raise SystemExit(
            f"--preset {args.preset}: model.arch={preset.model.arch!r} has no MONAI counterpart; "
            "use a preset with the plain U-Net (tiny, quick)"
        )
    cfg = preset.train
    if args.threads or cfg.threads:
        torch.set_num_threads(args.threads or cfg.threads)
    if args.dice:
        print(
            json.dumps(
                dice_comparison(preset, args.seeds, args.num_res_units, monai.__version__, args.monai_epochs), indent=2
            )
        )
        return 0
    side = cfg.patch_size or preset.data.size
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    loss_fn = get_loss(cfg.loss)

    seed_everything(0)
    x = torch.rand(cfg.batch_size, 1, side, side).contiguous(memory_format=fmt)
    y = (torch.rand(cfg.batch_size, 1, side, side) > 0.9).float().contiguous(memory_format=fmt)
    nets = {
        "augforge": build_model(preset.model),
        "monai": monai_unet(preset.model.base_width, preset.model.depth, args.num_res_units),
    }
    optimisers = {}
    for name, net in nets.items():
        net.to(memory_format=fmt).train()
        optimisers[name] = make_optimizer(net.parameters(), cfg)

    def step(name: str) -> None:
        loss = loss_fn(nets[name](x), y)
        optimisers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimisers[name].step()

    flops = {}
    for name, net in nets.items():
        with FlopCounterMode(display=False) as counter:
            loss_fn(net(x), y).backward()
        net.zero_grad(set_to_none=True)
        flops[name] = counter.get_total_flops()
        for _ in range(args.warmup):  # oneDNN builds its kernels on first use
            step(name)

    times: dict[str, list[float]] = {name: [] for name in nets}
    order = list(nets)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            times[name].append((time.perf_counter() - t0) / args.steps)

    per_net = {}
    for name, net in nets.items():
        ms = 1e3 * statistics.median(times[name])
        per_net[name] = {
            "parameters": count_parameters(net),
            "step_gflop": round(flops[name] / 1e9, 3),
            "step_ms": round(ms, 2),
            "step_ms_range": [round(1e3 * min(times[name]), 2), round(1e3 * max(times[name]), 2)],
            "gflops": round(flops[name] / 1e9 / (ms / 1e3), 2),
            "samples_per_s": round(cfg.batch_size / (ms / 1e3), 1),
        }
    ours, theirs = per_net["augforge"], per_net["monai"]
    print(
        json.dumps(
            {
                "available": True,
                "preset": preset.name,
                "batch": [cfg.batch_size, 1, side, side],
                "channels_last": cfg.channels_last,
                "loss": cfg.loss,
                "optimizer": cfg.optimizer,
                "widths": [preset.model.base_width * 2**i for i in range(preset.model.depth + 1)],
                "monai_num_res_units": args.num_res_units,
                "threads": torch.get_num_threads(),
                "steps_x_rounds": [args.steps, args.rounds],
                "augforge": ours,
                "monai": theirs,
                # > 1: augforge's step is faster.
                "speedup_vs_monai": round(theirs["step_ms"] / ours["step_ms"], 3),
                "gflops_ratio_vs_monai": round(ours["gflops"] / theirs["gflops"], 3),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "versions": {
                    "monai": monai.__version__,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
