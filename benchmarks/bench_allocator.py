"""The allocator lever: one training step of the quick preset's U-Net with glibc's malloc as it comes
and with freed memory kept in the process (augforge/train/allocator.py), side by side in one run.

The setting is process-wide and cannot be undone, so every measurement runs in a fresh subprocess,
``system`` and ``kept`` alternating round by round. For float32 and bfloat16 (``train.cpu_amp``), at
1 thread (a study's parallel layout) and at all cores (one trial at a time), it prints one JSON
object: the median time of a training step (``what: step``) and of scoring one whole test slice
(``what: score``, batches of 16 as a trial scores) under each allocator, their ratio, the child's
peak RSS and minor page faults per step or slice, and whether both computed the same losses (or
predicted masks) bit for bit (they must).

Usage: ``python benchmarks/bench_allocator.py [--steps 20] [--images 96] [--rounds 2] [--threads 1 --threads 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CHILD = "--child"


def child_eval(allocator: str, threads: int, bf16: bool, images: int) -> None:
    """Scoring's forward pass: whole test slices of the quick preset's data, batches of 16."""
    import hashlib

    import torch

    from augforge.config import get_preset
    from augforge.data.sources import load_dataset
    from augforge.models import build_model
    from augforge.train.allocator import keep_freed_memory
    from augforge.train.evaluate import predict_masks

    kept = keep_freed_memory() if allocator == "kept" else False
    torch.set_num_threads(threads)
    preset = get_preset("quick")
    slices = load_dataset(preset.data, progress=False).test[:images]
    torch.manual_seed(0)
    model = build_model(preset.model)
    imgs = [s.image for s in slices]
    predict_masks(model, imgs[:16], cpu_amp=bf16)  # warm-up
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    masks = predict_masks(model, imgs, cpu_amp=bf16)
    ms = (time.perf_counter() - t) / len(imgs) * 1000
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / len(imgs)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = hashlib.sha256(b"".join(m.tobytes() for m in masks)).hexdigest()
    print(json.dumps({"ms": ms, "kept": kept, "faults": faults, "rss_mb": rss_mb, "losses": [digest]}))


def child(allocator: str, threads: int, bf16: bool, steps: int) -> None:
    import torch
    from quick_step import quick_training_step

    from augforge.train.allocator import keep_freed_memory

    kept = keep_freed_memory() if allocator == "kept" else False
    torch.set_num_threads(threads)
    run = quick_training_step()

    def step() -> float:
        return run(bf16)

    for _ in range(3):  # warm-up: oneDNN picks its kernels, the heap reaches its working size
        step()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    losses = [step() for _ in range(steps)]
    ms = (time.perf_counter() - t) / steps * 1000
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ms": ms, "kept": kept, "faults": faults, "rss_mb": rss_mb, "losses": losses}))


def measure(allocator: str, threads: int, bf16: bool, steps: int, what: str = "step") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("AUGFORGE_MALLOC", None)
    cmd = [sys.executable, __file__, CHILD, allocator, str(threads), "1" if bf16 else "0", str(steps), what]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per configuration")
    ap.add_argument("--threads", type=int, action="append", default=[], help="torch threads (repeatable)")
    ap.add_argument("--images", type=int, default=96, help="whole test slices scored per measurement (0: skip)")
    args = ap.parse_args()
    threads_list = args.threads or sorted({1, os.cpu_count() or 1})

    results = []
    plan = [("step", bf16, t) for bf16 in (False, True) for t in threads_list]
    plan += [("score", bf16, t) for bf16 in (False, True) for t in threads_list] if args.images else []
    for what, bf16, threads in plan:
        count = args.steps if what == "step" else args.images
        runs: dict[str, list[dict]] = {"system": [], "kept": []}
        for _ in range(args.rounds):
            for allocator in runs:
                runs[allocator].append(measure(allocator, threads, bf16, count, what))
        ms = {a: statistics.median(r["ms"] for r in rs) for a, rs in runs.items()}
        results.append(
            {
                "what": what,
                "precision": "bfloat16" if bf16 else "float32",
                "threads": threads,
                "ms": {a: round(v, 1) for a, v in ms.items()},
                "per_round_ms": {a: [round(r["ms"], 1) for r in rs] for a, rs in runs.items()},
                "kept_over_system": round(ms["kept"] / ms["system"], 3),
                "page_faults_per_unit": {
                    a: round(statistics.median(r["faults"] for r in rs)) for a, rs in runs.items()
                },
                "peak_rss_mb": {a: round(max(r["rss_mb"] for r in rs)) for a, rs in runs.items()},
                "kept_in_force": all(r["kept"] for r in runs["kept"]),
                "same_results": all(r["losses"] == runs["system"][0]["losses"] for rs in runs.values() for r in rs),
            }
        )
    import torch

    print(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "torch": torch.__version__,
                "steps": args.steps,
                "rounds": args.rounds,
                "results": results,
                "load_average_1min": round(os.getloadavg()[0], 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        a, t, b, n, what = sys.argv[2:7]
        (child if what == "step" else child_eval)(a, int(t), b == "1", int(n))
    else:
        main()
