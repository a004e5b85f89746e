"""`ptrain bench --profile`: where a training step's time goes, and a torch.profiler trace to look at.

A few optimizer steps run under torch.profiler after the timed steps. Every operator's self time (its own time,
not its children's) goes to one category, decided by the operator and the operators or autograd nodes it runs
under: dropout, attention, matmul, optimizer (gradient normalisation and clipping, AdamW, zeroing), data
(waiting for the next batch) or other (LayerNorm, GELU, casts, the loss, Python between operators). The trace is
a Chrome trace JSON that Perfetto (ui.perfetto.dev) and TensorBoard's profiler plugin
(`tensorboard --logdir DIR`, PYTORCH_PROFILER tab, from the torch-tb-profiler package) open.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

CATEGORIES = ("matmul", "attention", "dropout", "optimizer", "data", "other")
# Keywords, checked on an operator and everything it runs under, outermost first; the first category with a
# match wins, so a matmul inside attention counts as attention and one inside dropout's backward as dropout.
ENCLOSING = (
    ("optimizer", ("Optimizer.", "_foreach_", "clip_grad", "ptrain::clip")),
    ("dropout", ("dropout", "Dropout", "bernoulli", "ptrain::mask")),
    ("attention", ("scaled_dot_product", "attention", "Attention", "softmax", "Softmax")),
)
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")


def categorise(names: list[str]) -> str:
    """The category of an operator, from its own name and those of what it runs under (outermost first)."""
    for category, keywords in ENCLOSING:
        if any(keyword in name for name in names for keyword in keywords):
            return category
    if any(name.startswith(MATMUL) or "MmBackward" in name or "Addmm" in name for name in names):
        return "matmul"
    return "other"


def lineage(event) -> list[str]:
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    return names[::-1]


def breakdown(events, wall_seconds: float, data_seconds: float, steps: int) -> dict:
    """Milliseconds per step in each category; what no operator accounts for is Python overhead, under other."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        if event.device_type == torch.autograd.DeviceType.CPU:
            totals[categorise(lineage(event))] += event.self_cpu_time_total / 1e6
    accounted = sum(totals.values())
    totals["data"] += data_seconds
    totals["other"] += max(0.0, wall_seconds - accounted - data_seconds)
    step_ms = 1000 * wall_seconds / steps
    return {
        "step_ms": step_ms,
        "steps": steps,
        "categories": {
            name: {"ms_per_step": 1000 * seconds / steps, "share": seconds / wall_seconds}
            for name, seconds in totals.items()
        },
    }


def profile_steps(run_steps, timed_loader, steps: int, out_dir: Path) -> dict:
    """`steps` optimizer steps (`run_steps(loader, steps)`) under torch.profiler; the trace and breakdown.json go
    to out_dir, the breakdown is returned."""
    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        run_steps(timed_loader, steps)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
    result = breakdown(profiler.events(), wall, timed_loader.waiting_seconds, steps)
    trace = out_dir / "ptrain.pt.trace.json"  # the name TensorBoard's profiler plugin looks for
    profiler.export_chrome_trace(str(trace))
    result["trace"] = str(trace)
    (out_dir / "breakdown.json").write_text(json.dumps(result, indent=2))
    return result


def print_breakdown(result: dict) -> None:
    print(f"step profile ({result['steps']} steps under torch.profiler, {result['step_ms']:.1f} ms per step):")
    for name, stats in result["categories"].items():
        print(f"  {name:<10}{stats['ms_per_step']:>8.1f} ms{stats['share']:>8.1%}")
    print(f"trace: {result['trace']} (Perfetto, or tensorboard --logdir {Path(result['trace']).parent})")
