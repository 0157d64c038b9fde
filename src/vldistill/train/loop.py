"""A training loop you can read top to bottom, that resumes exactly where it stopped.

Nothing here depends on iterator state: the examples of step s come from a permutation seeded by
(seed, epoch), and every step re-seeds torch from (seed, step) before its forward pass (dropout,
negative sampling). So a run killed after its last checkpoint and started again computes the same
steps with the same numbers as an uninterrupted run (bit-identical on CPU), and the checkpoint
only needs the model, the optimiser, the scheduler and the step.

Under torchrun (WORLD_SIZE > 1) the same loop is data-parallel: every rank computes the same
global batch indices, takes its equal slice, and the ranks average their gradients before the
optimiser step, so for a loss that is a mean over examples the update is the one-process update
on the same global batch (to float rounding; dropout masks differ). Losses that couple a batch's
examples (InfoNCE's in-batch negatives) see only the rank's slice. Rank 0 writes the checkpoint;
every rank resumes from it. One process runs exactly the code path it always did.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from vldistill.config import read_section
from vldistill.data.images import PixelBank, normalise
from vldistill.io import atomic_output
from vldistill.train import distributed
from vldistill.train.compute import Compute

log = logging.getLogger(__name__)



@dataclass
class Batch:
    """What one step trains on, as the loader's workers prepared it."""

    step: int
    rows: torch.Tensor  # example rows of the step (this rank's slice under torchrun)
    pixels: torch.Tensor | None = None  # uint8 pixels of the rows' images (pinned for CUDA)
    targets: Any = None  # what ``train(targets=...)`` looked up for the rows (teacher features)

    def images(self, device: torch.device) -> torch.Tensor:
        """The batch's images as the student's normalised floats on ``device``; the uint8
        pixels cross to the device (a quarter of the bytes of floats) and are scaled there."""
        if self.pixels is None:
            raise ValueError("this training loop was given no images (train(images=...))")
        return normalise(self.pixels.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``) for CUDA runs."""
        pixels = self.pixels.pin_memory() if self.pixels is not None else None
        targets = self.targets.pin_memory() if hasattr(self.targets, "pin_memory") \
            else self.targets
        return Batch(self.step, self.rows, pixels, targets)


LossFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return read_section(cls, d, "training")


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Example rows of step ``step``: consecutive slices of per-epoch seeded permutations."""
    if n < 1:
        raise ValueError("cannot train on an empty dataset")
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = positions // n, positions % n
    rows = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator)
        chosen = epochs == epoch
        rows[chosen] = order[offsets[chosen]]
    return rows


class StepBatches(torch.utils.data.Dataset):
    """Item s is step s's Batch: its rows (``batch_indices``, this rank's slice) and, given a
    bank, their images' pixels, and given ``targets``, what it looks up for the rows. A pure
    function of the step, so any worker can make any step and a resumed run's loader starts at
    its step with the same batches."""

    def __init__(self, n_examples: int, cfg: TrainConfig,
                 images: tuple[PixelBank, torch.Tensor] | None = None,
                 targets: Callable[[torch.Tensor], Any] | None = None) -> None:
        self.n_examples, self.cfg, self.images, self.targets = n_examples, cfg, images, targets

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> Batch:
        rows = batch_indices(self.n_examples, self.cfg.batch_size, step, self.cfg.seed)
        if distributed.world()[1] > 1:
            rows = distributed.local_rows(rows)
        pixels = None
        if self.images is not None:
            bank, image_rows = self.images
            pixels = bank.pixels[image_rows[rows]]
        return Batch(step, rows, pixels, self.targets(rows) if self.targets else None)


def step_loader(batches: StepBatches, start: int, workers: int, device: torch.device
                ) -> torch.utils.data.DataLoader:
    """Steps ``start``.. of ``batches`` in order; ``workers`` processes read ahead (4 steps
    each) while the model trains, copied into pinned memory when the model is on a GPU (so the
    host-to-device copy of ``Batch.images`` overlaps the computation)."""
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, batches.cfg.steps), num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers > 0 else None)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def train(model: nn.Module, loss_fn: LossFn, n_examples: int, cfg: TrainConfig,
          state_path: str | Path, progress: bool = True,
          extra_state: Stateful | None = None,
          validate: Callable[[nn.Module], dict[str, float]] | None = None,
          validate_every: int = 0, compute: Compute | None = None,
          images: tuple[PixelBank, torch.Tensor] | None = None,
          targets: Callable[[torch.Tensor], Any] | None = None) -> list[dict[str, float]]:
    """Run ``cfg.steps`` optimiser steps, resuming from ``state_path`` if it exists.

    ``loss_fn(model, batch)`` returns a dict with "loss" (to minimise) and any other scalars
    to log; ``batch`` is the step's ``Batch``. ``images``: a bank and each example's row in it;
    the loader's workers (``compute.workers``) then read every step's images from it ahead of
    the step; ``targets(rows)`` (the teachers' cached features of the rows) is read there too
    (``batch.targets``). Returns the per-step history of those scalars (restored history
    included).
    ``extra_state`` is anything else the loss carries across steps (e.g. AF's smoothed task
    loss); it is checkpointed and restored with the model so a resumed run stays identical.
    ``validate(model)`` (eval mode, no grad) runs every ``validate_every`` steps and after the
    last; its scalars join that step's record. It must not draw from torch's global generator.
    ``compute``: the precision the loss runs in (bf16 autocast or fp32); the model is already on
    its device. The logged scalars stay on the device until a checkpoint, validation or the last
    step reads them all at once, so a GPU is not made to wait every step; a non-finite loss is
    reported then, with its step, before any checkpoint could keep it.
    """
    compute = compute or Compute()
    device = next(model.parameters()).device
    compute.compile_parts(model)
    state_path = Path(state_path)
    rank, world_size = distributed.world()
    if world_size > 1:
        distributed.setup(next(model.parameters()).device)
        distributed.broadcast_parameters(model)
        log.info("data-parallel over %d processes (this is rank %d)", world_size, rank)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    # fused: one kernel over all parameters; the 49k-row token embedding made the per-tensor
    # update a third of a CPU step
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    start, history = 0, []
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["config"] != asdict(cfg):
            raise ValueError(f"{state_path} was written with another training config; "
                             "delete it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = state["step"], state["history"]
        if extra_state is not None:
            extra_state.load_state_dict(state["extra"])
        log.info("resuming from step %d of %d (%s)", start, cfg.steps, state_path)

    pending: list[tuple[int, float, dict[str, torch.Tensor]]] = []  # steps not yet read back

    def read_back() -> None:
        """Turn the pending steps' scalars into history records (one host sync for all)."""
        for past, lr, scalars in pending:
            record = {k: float(v) for k, v in scalars.items()}
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"loss is {record['loss']} at step {past}; lower the lr")
            if world_size > 1:
                record = distributed.average_scalars(record, device)
            history.append({"step": past, "lr": lr, **record})
        pending.clear()
        if history:
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", refresh=False)

    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, unit="step",
               file=sys.stderr, mininterval=10.0, disable=not progress or rank > 0)
    loader = step_loader(StepBatches(n_examples, cfg, images, targets), start, compute.workers,
                         device)
    for step, batch in zip(bar, loader, strict=True):
        # one stream per (step, rank): dropout and negatives differ across ranks' slices
        torch.manual_seed((cfg.seed * 1_000_003 + step) * world_size + rank)
        with compute.autocast(device):
            out = loss_fn(model, batch)
        loss = out["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world_size > 1:
            distributed.average_gradients(model)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        pending.append((step, scheduler.get_last_lr()[0],
                        {k: torch.as_tensor(v).detach() for k, v in out.items()
                         if torch.as_tensor(v).numel() == 1}))
        validating = validate is not None and validate_every > 0 and (
            (step + 1) % validate_every == 0 or step + 1 == cfg.steps)
        checkpointing = (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps
        if validating or checkpointing:
            read_back()
        if validating:
            model.eval()
            with torch.no_grad():
                history[-1].update(validate(model))
            model.train()
        if rank == 0 and checkpointing:
            with atomic_output(state_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "step": step + 1,
                            "history": history, "config": asdict(cfg),
                            "extra": extra_state.state_dict() if extra_state else None}, tmp)
    distributed.barrier()  # the final checkpoint is on disk before any rank moves on
    model.eval()
    return history


def summarise_history(history: list[dict[str, float]], info: dict[str, Any]) -> dict[str, Any]:
    """``info`` plus the step count, the mean of every logged scalar over the last 10% of the
    steps (one step's loss is noise) and the whole history."""
    if not history:
        raise ValueError("no training steps to summarise")
    tail = history[-max(1, len(history) // 10):]
    every_step = [k for k in history[0] if k != "step" and all(k in h for h in history)]
    final = {k: sum(h[k] for h in tail) / len(tail) for k in every_step}
    # scalars logged only at some steps (held-out validation): their curve, and the last value
    validation = [{k: v for k, v in h.items() if k == "step" or k not in every_step}
                  for h in history if set(h) - set(every_step) - {"step"}]
    summary = {**info, "steps": len(history), "final": final, "history": history}
    if validation:
        summary["validation"] = validation
        summary["final_validation"] = validation[-1]
    return summary
