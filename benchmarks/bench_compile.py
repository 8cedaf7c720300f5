"""Does ``torch.compile`` pay for the quick preset's U-Net training step on this CPU?

Eager and compiled models (same architecture, channels-last, Adam, the preset's loss and patch batch)
are timed in the same run: the first step (for the compiled model, compilation included) and the
median of 20 steps after 3 warm-up steps. Prints one JSON object. Not part of ``run_all.py``: the
compilation alone takes over a minute here.

    python benchmarks/bench_compile.py
"""

from __future__ import annotations

import json
import time

import torch

from augforge.config import get_preset
from augforge.models import build_model
from augforge.train import get_loss


def time_steps(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, steps: int = 20
) -> tuple[float, float]:
    """(seconds of the first step, median seconds of ``steps`` steps after 3 warm-up steps)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0

    first = step()
    for _ in range(3):
        step()
    times = sorted(step() for _ in range(steps))
    return first, times[len(times) // 2]


def main() -> None:
    torch.manual_seed(0)
    preset = get_preset("quick")
    side, batch = preset.train.patch_size, preset.train.batch_size
    x = torch.rand(batch, 1, side, side).contiguous(memory_format=torch.channels_last)
    y = (torch.rand_like(x) > 0.9).float()
    loss_fn = get_loss(preset.train.loss)
    out: dict[str, object] = {"preset": preset.name, "batch": batch, "patch": side, "threads": torch.get_num_threads()}
    eager = build_model(preset.model).to(memory_format=torch.channels_last)
    first, median = time_steps(eager, x, y, loss_fn)
    out.update(eager_first_s=round(first, 3), eager_step_ms=round(1000 * median, 1))
    try:
        compiled = torch.compile(build_model(preset.model).to(memory_format=torch.channels_last))
        first, median = time_steps(compiled, x, y, loss_fn)
        out.update(compiled_first_s=round(first, 1), compiled_step_ms=round(1000 * median, 1))
        out["speedup"] = round(out["eager_step_ms"] / out["compiled_step_ms"], 3)
    except Exception as exc:  # noqa: BLE001 -- no compiler here: report it, the eager figure stands
        out["compile_error"] = f"{type(exc).__name__}: {exc}"[:300]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
