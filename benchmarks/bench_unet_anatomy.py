"""Where a U-Net training step's time goes, and what the layouts that would change it cost, in one run.

The quick preset's step (batch 16 of 96x96 patches, width 8, depth 4, Adam, Dice-BCE) on one fixed
batch, timed as the median of ``--steps`` steps after two warm-up steps, under four layouts:
channels-last or contiguous memory, with ``--threads`` threads or one. Each layout's weights after
the timed steps are hashed: equal hashes mean the layout computes the same numbers as the preset's
(channels-last, all threads); any other hash means adopting it would change every trial's result.

Then torch's profiler splits the preset layout's step by operator (self time, forward and backward
together), which names where the gap to the matmul peak lies.

Printed as one JSON object: ``layouts`` (ms per step and whether the weights equal the preset's)
and ``operators`` (share of the step's self time, top ``--top``).

Usage::

    python benchmarks/bench_unet_anatomy.py [--steps 12] [--threads 0] [--top 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from augforge.config import get_preset
from augforge.models import build_model
from augforge.seeding import deterministic
from augforge.train import get_loss

# profiler names -> the operation a reader knows
_GROUPS = {
    "aten::convolution_backward": "convolution backward",
    "aten::mkldnn_convolution": "convolution forward",
    "aten::native_batch_norm": "batch norm forward",
    "aten::native_batch_norm_backward": "batch norm backward",
    "aten::threshold_backward": "ReLU backward",
    "aten::cat": "skip concatenation",
    "aten::upsample_bilinear2d": "bilinear up-sampling",
    "aten::upsample_bilinear2d_backward": "bilinear up-sampling backward",
}


def make_step(channels_last: bool, seed: int = 0) -> tuple[Any, torch.nn.Module]:
    preset = get_preset("quick")
    cfg = preset.train
    torch.manual_seed(seed)
    model = build_model(preset.model)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = get_loss(cfg.loss)
    g = torch.Generator().manual_seed(1)
    side = cfg.patch_size
    x = torch.rand(cfg.batch_size, 1, side, side, generator=g).contiguous(memory_format=fmt)
    y = (torch.rand(cfg.batch_size, 1, side, side, generator=g) > 0.7).float().contiguous(memory_format=fmt)

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, model


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def time_layout(channels_last: bool, threads: int, steps: int) -> tuple[float, str]:
    torch.set_num_threads(threads)
    step, model = make_step(channels_last)
    times = []
    with deterministic():
        for _ in range(steps + 2):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times[2:]) * 1000, weights_hash(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="threads of the preset layout (0: torch's default)")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()

    layouts: dict[str, dict[str, Any]] = {}
    preset_hash = None
    for name, cl, n in (
        ("channels-last", True, threads),
        ("contiguous", False, threads),
        ("channels-last, 1 thread", True, 1),
        ("contiguous, 1 thread", False, 1),
    ):
        ms, digest = time_layout(cl, n, args.steps)
        preset_hash = preset_hash or digest
        layouts[name] = {"threads": n, "ms_per_step": round(ms, 1), "same_weights": digest == preset_hash}

    torch.set_num_threads(threads)
    step, _ = make_step(True)
    for _ in range(2):
        step()
    with deterministic(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps // 2 or 1):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    operators = [
        {
            "op": e.key,
            "what": _GROUPS.get(e.key, ""),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls_per_step": e.count // (args.steps // 2 or 1),
        }
        for e in ops
    ]
    print(
        json.dumps(
            {
                "threads": threads,
                "cpu_count": os.cpu_count(),
                "layouts": layouts,
                "operators": operators,
                "load_average_1min": round(os.getloadavg()[0], 2),
                "torch": torch.__version__,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
