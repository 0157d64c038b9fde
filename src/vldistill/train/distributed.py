"""Data-parallel training across processes (torchrun), and how a rule starts them.

A rule script that gets more than one process re-runs itself under torchrun, one worker per
process; every worker runs the same stage (same data, same seeded model), and the training loop
splits each global batch across them and averages gradients. One process changes nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
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


def relaunch(script: str, nproc: int, *args: str, nodes: int = 1) -> bool:
    """Run ``script`` (with ``args``) under torchrun with ``nproc`` workers per node and wait for
    them; a failing worker fails the launcher. ``nodes`` > 1: one torchrun per node of the
    job's SLURM allocation (through ``srun``), meeting at a rendezvous on this node.

    True when this process was the launcher (the workers did the work); False when there is
    nothing to launch (one process on one node, or already a torchrun worker).
    """
    if (nproc <= 1 and nodes <= 1) or "LOCAL_RANK" in os.environ:
        return False
    if nodes <= 1:
        command = torchrun_command(script, nproc, args)
    else:
        command = srun_command(nodes, os.environ) + torchrun_command(
            script, nproc, args, nodes=nodes, endpoint=rendezvous_endpoint(os.environ),
            run_id=os.environ["SLURM_JOB_ID"])
    subprocess.run(command, check=True)
    return True


def torchrun_command(script: str, nproc: int, args: Sequence[str], nodes: int = 1,
                     endpoint: str | None = None, run_id: str | None = None) -> list[str]:
    """One node's launcher: ``nproc`` workers; with ``nodes`` > 1 they join the other nodes'
    workers at the c10d rendezvous ``endpoint`` (host:port) under ``run_id``."""
    if nodes <= 1:
        where = ["--standalone"]
    else:
        where = [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                 f"--rdzv-id={run_id}"]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={nproc}",
            script, *args]


# The rendezvous port on the job's first node: one per job id, so two jobs sharing a node
# do not meet each other's workers
RENDEZVOUS_PORT_BASE = 29_500


def rendezvous_endpoint(env: Mapping[str, str]) -> str:
    """host:port of the rendezvous: this node (the batch host, where the rule's script runs)."""
    host = env.get("SLURMD_NODENAME") or socket.gethostname()
    return f"{host}:{RENDEZVOUS_PORT_BASE + int(env['SLURM_JOB_ID']) % 1000}"


def srun_command(nodes: int, env: Mapping[str, str]) -> list[str]:
    """One task per node of the job's allocation, each with the whole node's cores."""
    if "SLURM_JOB_ID" not in env:
        raise RuntimeError(f"nodes: {nodes} needs a SLURM allocation to start one launcher per "
                           "node (run through the slurm workflow profile), or use nodes: 1")
    allocated = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    if allocated < nodes:
        raise RuntimeError(f"nodes: {nodes}, but the SLURM job has {allocated} node(s): ask the "
                           "profile for as many (resources: nodes)")
    cores = env.get("SLURM_CPUS_ON_NODE")
    # --overlap: the rule's own step (Snakemake's srun) already holds this node's cores
    return ["srun", "--overlap", f"--nodes={nodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1", *([f"--cpus-per-task={cores}"] if cores else [])]


def run_training_rule(smk: Any, stage: Callable[..., Any], **arguments: Any) -> None:
    """What each training rule's script does: log to the rule's log on the job's share of the
    threads, then run ``stage(**arguments)`` here, or, when the job has more than one process
    (`processes` or `gpu` resource per node, `nodes` nodes), under torchrun, which re-runs the
    script once per worker."""
    nproc, nodes = processes(smk.resources), int(smk.resources.get("nodes", 1) or 1)
    with rule_logging(smk.log[0], max(1, smk.threads // nproc)):
        if not relaunch(sys.argv[0], nproc, nodes=nodes):
            stage(**arguments)
