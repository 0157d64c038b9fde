"""Data-parallel training across processes (torchrun), and how a rule starts them.

A rule script that gets more than one process re-runs itself under torchrun, one worker per
process; every worker runs the same stage (same data, same seeded model), and the training loop
splits each global batch across them and averages gradients. One process changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vldistill.workflow import rule_logging


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def setup(device: torch.device) -> None:
    """Join the process group torchrun describes, once per process: nccl for a model on a GPU,
    gloo on CPU."""
    if world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def local_rows(rows: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of the global batch (equal slices, so the mean of the
    ranks' mean losses is the global batch's mean loss)."""
    rank, size = world()
    if len(rows) % size:
        raise ValueError(f"batch_size {len(rows)} does not split over {size} processes")
    per_rank = len(rows) // size
    return rows[rank * per_rank:(rank + 1) * per_rank]


def broadcast_parameters(model: nn.Module) -> None:
    """Start every rank from rank 0's weights (seeded builds agree; this makes it certain)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def average_gradients(model: nn.Module) -> None:
    """All-reduce the gradients in one flat buffer and divide by the world size.

    A parameter no rank used keeps grad None (as in one process, so AdamW skips it); one that
    only some ranks used counts zero on the others.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    flat = torch.cat([used, *(p.grad.reshape(-1).float() if p.grad is not None
                              else torch.zeros(p.numel(), device=device) for p in params)])
    dist.all_reduce(flat)
    flat[len(params):] /= world()[1]
    offset = len(params)
    for i, p in enumerate(params):
        grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        p.grad = grad.to(p.dtype).clone() if flat[i] > 0 else None


def average_scalars(record: dict[str, float], device: torch.device) -> dict[str, float]:
    """The ranks' mean of each logged scalar, so every rank logs the global batch's numbers."""
    values = torch.tensor(list(record.values()), dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(record, (values / world()[1]).tolist(), strict=True))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def processes(resources: Mapping[str, Any]) -> int:
    """Training processes for a job: its `processes` resource if set, else one per GPU the job
    asked for (`gpu`), else 1. torchrun gives each its LOCAL_RANK, and each rank computes on
    cuda:LOCAL_RANK (train/compute.py)."""
    asked = resources.get("processes") or resources.get("gpu") or 1
    return max(1, int(asked))


def relaunch(script: str, nproc: int, *args: str) -> bool:
    """Run ``script`` (with ``args``) under torchrun with ``nproc`` workers on this node and
    wait for them; a failing worker fails the launcher.

    True when this process was the launcher (the workers did the work); False when there is
    nothing to launch (one process, or already a torchrun worker).
    """
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return False
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}", script, *args], check=True)
    return True


def run_training_rule(smk: Any, stage: Callable[..., Any], **arguments: Any) -> None:
    """What each training rule's script does: log to the rule's log on the job's share of the
    threads, then run ``stage(**arguments)`` here, or, when the job has more than one process
    (`processes` or `gpu` resource), under torchrun, which re-runs the script once per worker."""
    nproc = processes(smk.resources)
    with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
        if not relaunch(sys.argv[0], nproc):
            stage(**arguments)
