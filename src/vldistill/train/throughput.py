"""How fast a training step runs and how much of the chip it uses: examples/s, model FLOPs per
example (counted by torch's FlopCounterMode on the step itself, forward and backward) and model
FLOP utilisation (MFU) against the device's peak. What benchmarks/gpu_bench.py reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from vldistill.train.compute import Compute

# dense bf16 tensor-core peaks (vendor data sheets), by a substring of torch's device name
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                   "A10G": 125e12, "V100": 125e12}


def peak_flops(device: torch.device, given_tflops: float | None = None) -> float | None:
    """The device's peak FLOP/s: ``given_tflops`` if set, else the table's entry for a CUDA
    device's name; None when unknown (a CPU), so MFU is then not reported."""
    if given_tflops:
        return given_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


@dataclass(frozen=True)
class StepThroughput:
    examples_per_s: float
    flops_per_example: float
    achieved_tflops: float
    mfu: float | None  # None: the device's peak is unknown

    def as_dict(self) -> dict[str, float | None]:
        return {"examples_per_s": round(self.examples_per_s, 1),
                "gflops_per_example": round(self.flops_per_example / 1e9, 3),
                "achieved_tflops": round(self.achieved_tflops, 3),
                "mfu": None if self.mfu is None else round(self.mfu, 4)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], None], examples: int, device: torch.device, compute: Compute,
            steps: int = 20, warmup: int = 3, peak: float | None = None) -> StepThroughput:
    """Run ``step`` (one full training or scoring step over ``examples`` examples) ``warmup``
    times, count one step's FLOPs, then time ``steps`` more steps between device syncs."""
    with compute.autocast(device):
        for _ in range(warmup):
            step()
        with FlopCounterMode(display=False) as counter:
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
    seconds = (time.perf_counter() - start) / steps
    flops = counter.get_total_flops()
    achieved = flops / seconds
    return StepThroughput(examples / seconds, flops / examples, achieved / 1e12,
                          achieved / peak if peak else None)
