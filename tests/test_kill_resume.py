"""Nothing lost on failure: real SIGKILLs of a training process, of a write and of a whole
pipeline, then a re-run that ends with the same bytes as an uninterrupted run."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import copy_workflow, snakemake

TRAIN_SCRIPT = """
import logging, sys, time, torch
from torch import nn
from vldistill.train.loop import TrainConfig, train

logging.basicConfig(level=logging.INFO)
state, out, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 4, generator=g)
y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
torch.manual_seed(123)
model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.Linear(16, 1))

def loss_fn(m, batch):
    time.sleep(pause)  # a slow step, so the kill lands mid-run
    return {"loss": nn.functional.mse_loss(m(x[batch.rows]).squeeze(-1), y[batch.rows])}

# 64 examples, batch 8: an epoch is 8 steps; checkpoints every 3 steps fall mid-epoch
cfg = TrainConfig(steps=40, batch_size=8, lr=1e-2, warmup_steps=3, checkpoint_every=3)
train(model, loss_fn, 64, cfg, state, progress=False)
torch.save(model.state_dict(), out)
"""


def wait_for(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.02)


def saved_step(state: Path) -> int:
    try:  # the state file is replaced atomically, so a read sees a whole checkpoint or none
        return torch.load(state, weights_only=False)["step"] if state.exists() else 0
    except (EOFError, RuntimeError, FileNotFoundError):
        return 0


def test_sigkill_mid_epoch_then_rerun_gives_bit_identical_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    reference = tmp_path / "reference.pt"
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref-state.pt"), str(reference),
                    "0"], check=True, timeout=300)

    state, out = tmp_path / "state.pt", tmp_path / "resumed.pt"
    job = subprocess.Popen([sys.executable, str(script), str(state), str(out), "0.05"],
                           stderr=subprocess.PIPE, text=True)
    wait_for(lambda: saved_step(state) >= 6, what="the second checkpoint")
    job.send_signal(signal.SIGKILL)
    assert job.wait(timeout=30) == -signal.SIGKILL
    killed_at = saved_step(state)
    assert 6 <= killed_at < 40 and killed_at % 8 != 0  # mid-run, mid-epoch
    assert not out.exists()

    rerun = subprocess.run([sys.executable, str(script), str(state), str(out), "0"],
                           capture_output=True, text=True, timeout=300, check=True)
    assert f"resuming from step {killed_at} of 40" in rerun.stderr
    expected, resumed = torch.load(reference), torch.load(out)
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


WRITE_SCRIPT = """
import sys, time
from vldistill.io import atomic_output

with atomic_output(sys.argv[1]) as tmp:
    with open(tmp, "wb") as handle:
        for _ in range(10_000):
            handle.write(b"new" * 10_000)
            handle.flush()
            time.sleep(0.01)
"""


def test_sigkill_during_a_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "artifact.bin"
    target.write_bytes(b"old, complete")
    script = tmp_path / "write.py"
    script.write_text(WRITE_SCRIPT)
    writer = subprocess.Popen([sys.executable, str(script), str(target)])
    temporaries = lambda: [p for p in tmp_path.glob(".artifact.bin.tmp-*")  # noqa: E731
                           if p.stat().st_size > 100_000]
    wait_for(lambda: bool(temporaries()), what="the write to start")
    writer.send_signal(signal.SIGKILL)
    assert writer.wait(timeout=30) == -signal.SIGKILL
    assert target.read_bytes() == b"old, complete"  # never a half-written file under the name


# Writes that go straight to a final name, and why that is safe.
DIRECT_WRITES = {
    # the PNGs of the synthetic images/ folder: Snakemake's directory() output, deleted as a
    # whole when the job fails or is found incomplete
    ("synthetic/images.py", "save"),
    # streams the shard into the temporary path its caller got from atomic_output
    ("features/cache.py", "open"),
}
WRITERS = {"save_file", "save_model", "save", "write_parquet", "write_csv", "write_index",
           "savefig", "write_text", "write_bytes", "open"}


def test_every_artifact_write_goes_through_a_temporary_name(repo):
    """Every file-writing call in src/ writes to the temporary path of an ``atomic_output``
    block (or is listed above with its reason)."""
    offenders = []
    for path in sorted((repo / "src/vldistill").rglob("*.py")):
        rel = path.relative_to(repo / "src/vldistill").as_posix()
        if rel == "io.py":
            continue
        tree = ast.parse(path.read_text())
        temporaries = {item.optional_vars.id for node in ast.walk(tree)
                       if isinstance(node, ast.With) for item in node.items
                       if isinstance(item.context_expr, ast.Call)
                       and getattr(item.context_expr.func, "id", "") == "atomic_output"
                       and isinstance(item.optional_vars, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name not in WRITERS or (rel, name) in DIRECT_WRITES:
                continue
            if name == "open" and not any(isinstance(a, ast.Constant) and "w" in str(a.value)
                                          for a in node.args[1:]):
                continue  # opened for reading
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if not names & temporaries:
                offenders.append(f"{rel}:{node.lineno} {name}(...)")
    assert not offenders, offenders


@pytest.mark.slow
def test_a_pipeline_killed_mid_training_completes_on_rerun_and_keeps_finished_outputs(
        repo, tmp_path):
    """SIGKILL to Snakemake and its jobs while the student pre-trains; --rerun-incomplete then
    resumes the training from its checkpoint, re-runs nothing that had finished, and the model
    is bit-identical to an uninterrupted run's."""
    override = tmp_path / "long-pretrain.yaml"
    override.write_text("pretrain:\n  training: {steps: 80, batch_size: 8, lr: 0.003, "
                        "warmup_steps: 1, checkpoint_every: 10}\n")
    target = "models/tiny/student/seed-0/pretrained.safetensors"

    reference = copy_workflow(tmp_path / "reference")
    # (flags first: --configfile, which the helper passes first, takes every bare word after it)
    done = snakemake(reference, "--cores", "2", target, overrides=(str(override),))
    assert done.returncode == 0, done.stderr[-3000:]

    killed = copy_workflow(tmp_path / "killed")
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "snakemake", target, "data/tiny/texts.parquet", "--cores", "2",
         "--configfile", "configs/tiny.yaml", str(override)],
        cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)  # its own process group: one signal reaches every job
    states = lambda: list((killed / "models/tiny/student/seed-0").glob(  # noqa: E731
        ".pretrained.state-*.pt"))
    wait_for(lambda: any(saved_step(s) >= 10 for s in states()), what="a checkpoint")
    os.killpg(pipeline.pid, signal.SIGKILL)
    pipeline.wait(timeout=30)
    killed_at = max(saved_step(s) for s in states())
    assert not (killed / target).exists(), "killed too late: training had finished"
    finished = {p: (p.stat().st_mtime_ns, p.read_bytes())
                for p in (killed / "data/tiny/manifest").rglob("*.parquet")}
    assert finished

    assert snakemake(killed, "--unlock", overrides=(str(override),)).returncode == 0
    rerun = snakemake(killed, "--cores", "2", "--rerun-incomplete", target,
                      "data/tiny/texts.parquet", overrides=(str(override),))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (killed / "logs/tiny/student/seed-0/pretrain.log").read_text()
    assert f"resuming from step {killed_at} of 80" in log
    for path, (mtime, data) in finished.items():  # finished jobs were not run again
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, path
    assert (killed / target).read_bytes() == (reference / target).read_bytes()
    assert not states(), "the resumable state is removed once the model is saved"
