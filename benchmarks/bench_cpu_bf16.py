"""bfloat16 on this CPU: one training step of the quick preset's U-Net in float32 and under torch's
CPU bfloat16 autocast (``train.cpu_amp``), on one fixed batch, alternating rounds.

Prints one JSON object: the median step time of each, their ratio, and whether the CPU computes
bfloat16 natively. To see what a CPU without bfloat16 instructions pays, cap the instruction sets
torch and oneDNN use, e.g.::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_cpu_bf16.py
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python benchmarks/bench_cpu_bf16.py   # AVX512 without BF16

Usage: ``python benchmarks/bench_cpu_bf16.py [--threads 2] [--steps 15] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from quick_step import quick_training_step

from augforge.config import get_preset
from augforge.train.loop import cpu_has_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15, help="timed steps per round and precision")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    step = quick_training_step()
    cfg = get_preset("quick").train
    shape = (cfg.batch_size, 1, cfg.patch_size, cfg.patch_size)

    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(args.rounds):
        for name in times:
            bf16 = name == "bfloat16"
            for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
                step(bf16)
            t = time.perf_counter()
            for _ in range(args.steps):
                step(bf16)
            times[name].append((time.perf_counter() - t) / args.steps * 1000)
    fp32, bf16 = statistics.median(times["float32"]), statistics.median(times["bfloat16"])
    print(
        json.dumps(
            {
                "threads": args.threads,
                "batch": list(shape),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
                "cpu_bf16": cpu_has_bf16(),
                "step_ms": {"float32": round(fp32, 1), "bfloat16": round(bf16, 1)},
                "per_round_ms": {k: [round(v, 1) for v in vs] for k, vs in times.items()},
                "bf16_over_fp32": round(bf16 / fp32, 3),
                "torch": torch.__version__,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
