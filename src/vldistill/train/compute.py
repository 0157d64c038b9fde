"""Where and in what precision a stage computes: the config's ``compute`` section.

``device``: ``auto`` (CUDA when the job sees a GPU, else the CPU), ``cpu`` or ``cuda``; under
torchrun each rank takes ``cuda:LOCAL_RANK``. ``precision``: ``fp32``, or ``bf16`` autocast
(weights and optimiser state stay fp32: autocast runs the matmuls and attention in bf16 and
keeps reductions and losses in fp32, so no loss scaling is needed). On CUDA, fp32 matmuls may
use TF32 (``torch.backends.cuda.matmul.allow_tf32``), as open_clip's training does.
``workers``: DataLoader processes that build training batches ahead (train/loop.py).
``compile``: torch.compile the trained model's parts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vldistill.config import read_section

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@dataclass(frozen=True)
class Compute:
    device: str = "auto"
    precision: str = "fp32"
    workers: int = 0  # DataLoader processes reading training batches ahead (0: in the job's own)
    compile: bool = False  # torch.compile each of the model's parts (towers, fusion, decoder)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"compute.device: got {self.device!r}; expected one of {DEVICES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"compute.precision: got {self.precision!r}; expected one of "
                             f"{PRECISIONS}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compute.compile: got {self.compile!r}; expected true or false")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"compute.workers: got {self.workers!r}; expected an integer >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Compute:
        return read_section(cls, d, "compute")

    def torch_device(self) -> torch.device:
        """The device this process computes on (one per rank under torchrun)."""
        wants_cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        if not wants_cuda:
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise RuntimeError("compute.device is 'cuda' but this job sees no GPU; ask for one "
                               "(the rule's `gpu` resource) or set compute.device: auto")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """bf16 autocast on ``device`` when asked for, else nothing."""
        if self.precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def compile_parts(self, model: torch.nn.Module, backend: str = "inductor") -> None:
        """With ``compile`` on, compile the forward of each of the model's direct parts in
        place (``nn.Module.compile``: parameter names and checkpoints stay as they are). The
        losses call the parts (towers, fusion, decoder, heads) rather than the model's own
        forward, so the parts are what is compiled; captions trimmed to each batch's longest
        vary in length, which dynamo handles by marking that dimension dynamic after it first
        changes."""
        if not self.compile:
            return
        for part in model.children():
            part.compile(backend=backend)


@contextlib.contextmanager
def evaluating(compute: dict[str, Any] | None, *models: torch.nn.Module) -> Iterator[None]:
    """Run an evaluation's (or an index build's) model calls on the config's device and in its
    precision, without gradients; the callers bring scores and embeddings back to the host in
    fp32, where the metrics and faiss work on them."""
    where = Compute.from_dict(compute)
    device = where.torch_device()
    for model in models:
        model.to(device)
    with torch.no_grad(), where.autocast(device):
        yield
