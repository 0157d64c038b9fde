"""A small regression trained by vldistill's loop; run plainly it re-runs itself under torchrun.

    python tests/distributed_worker.py OUT_DIR PROCESSES [FAIL_AT_STEP]

Rank 0 writes OUT_DIR/history.json and OUT_DIR/model.pt. FAIL_AT_STEP makes every rank raise at
that step (a killed job), leaving the last checkpoint in OUT_DIR/state.pt.
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn

from vldistill.train import distributed
from vldistill.train.loop import TrainConfig, train

CFG = TrainConfig(steps=24, batch_size=8, lr=5e-2, warmup_steps=3, checkpoint_every=4, seed=5)


def problem(fail_at: int | None = None):
    """A seeded model (no dropout: one and two processes then differ by float rounding only)
    and a per-example-mean loss."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(40, generator=g)
    torch.manual_seed(123)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def loss_fn(m, batch):
        if batch.step == fail_at:
            raise RuntimeError(f"killed at step {batch.step}")
        return {"loss": nn.functional.mse_loss(m(x[batch.rows]).squeeze(-1), y[batch.rows])}

    return model, loss_fn


def main(out: Path, fail_at: int | None) -> None:
    model, loss_fn = problem(fail_at)
    history = train(model, loss_fn, 40, CFG, out / "state.pt", progress=False)
    if distributed.is_main():
        (out / "history.json").write_text(json.dumps(history))
        torch.save(model.state_dict(), out / "model.pt")


if __name__ == "__main__":
    out_dir, processes = Path(sys.argv[1]), int(sys.argv[2])
    fail = int(sys.argv[3]) if len(sys.argv) > 3 else None
    if not distributed.relaunch(sys.argv[0], processes, *sys.argv[1:]):
        main(out_dir, fail)
