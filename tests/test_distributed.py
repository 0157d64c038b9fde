"""Data-parallel training: two gloo processes on CPU under torchrun against one process."""

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import snakemake

from vldistill.train import distributed

WORKER = Path(__file__).with_name("distributed_worker.py")


def run_worker(out: Path, processes: int, fail_at: int | None = None):
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(WORKER), str(out), str(processes)]
    if fail_at is not None:
        args.append(str(fail_at))
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def results(out: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    history = json.loads((out / "history.json").read_text())
    return history, torch.load(out / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    start = time.perf_counter()
    for processes in (1, 2):
        result = run_worker(root / str(processes), processes)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"one- and two-process runs: {time.perf_counter() - start:.1f} s")
    return root


def test_two_processes_follow_the_one_process_loss_curve(one_and_two):
    one, one_weights = results(one_and_two / "1")
    two, two_weights = results(one_and_two / "2")
    assert [h["step"] for h in two] == list(range(24))
    assert [h["lr"] for h in two] == pytest.approx([h["lr"] for h in one], rel=1e-12)
    # same global batches, gradients averaged: equal up to float rounding
    assert [h["loss"] for h in two] == pytest.approx([h["loss"] for h in one], rel=1e-4)
    assert sum(h["loss"] for h in two[-6:]) < 0.5 * sum(h["loss"] for h in two[:6])  # it learns
    for name, weight in one_weights.items():
        torch.testing.assert_close(two_weights[name], weight, rtol=1e-4, atol=1e-5)


def test_a_killed_two_process_run_resumes_to_identical_weights(one_and_two, tmp_path):
    killed = run_worker(tmp_path, 2, fail_at=13)
    assert killed.returncode != 0 and "killed at step 13" in killed.stdout + killed.stderr
    assert (tmp_path / "state.pt").is_file() and not (tmp_path / "history.json").exists()
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert state["step"] == 12  # the last checkpoint before the kill (every 4 steps)
    resumed = run_worker(tmp_path, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history, weights = results(tmp_path)
    reference, reference_weights = results(one_and_two / "2")
    assert history == reference
    for name, weight in reference_weights.items():
        assert torch.equal(weights[name], weight), name


def test_each_rank_takes_an_equal_slice_of_the_global_batch(monkeypatch):
    rows = torch.arange(8)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.local_rows(rows).tolist() == [4, 5, 6, 7]
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="does not split over 3"):
        distributed.local_rows(rows)


def test_processes_come_from_the_jobs_resources():
    assert distributed.processes({}) == 1
    assert distributed.processes({"processes": 2, "gpu": 2}) == 2
    assert distributed.processes({"processes": 0}) == 1
    assert distributed.processes({"gpu": 4}) == 4  # one process per GPU the job asked for
    assert distributed.processes({"gpu": 1, "processes": 1}) == 1


@pytest.mark.slow
def test_a_training_rule_with_two_processes_runs_under_torchrun(tiny_run, tmp_path):
    """The rule's `processes` resource starts torchrun; rank 0 writes the outputs."""
    workdir = tmp_path / "tiny"
    shutil.copytree(tiny_run, workdir, ignore=shutil.ignore_patterns(".snakemake"))
    single = json.loads((tiny_run / "models/tiny/student/seed-0/pretrained.json").read_text())
    result = snakemake(workdir, "--cores", "2", "--forcerun", "student_pretrain",
                       "--set-resources", "student_pretrain:processes=2",
                       "--", "models/tiny/student/seed-0/pretrained.json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (workdir / "logs/tiny/student/seed-0/pretrain.log").read_text()
    assert "data-parallel over 2 processes (this is rank 1)" in log
    double = json.loads((workdir / "models/tiny/student/seed-0/pretrained.json").read_text())
    assert double["steps"] == single["steps"]
    # same data, same global batches; the ITM negatives are drawn per rank, so close, not equal
    first = [h["loss"] for h in (single["history"][0], double["history"][0])]
    assert first[1] == pytest.approx(first[0], rel=0.2)
    assert all(math.isfinite(h["loss"]) for h in double["history"])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_single_process_nodes_meet_at_a_rendezvous_and_train_as_two_processes(one_and_two,
                                                                                 tmp_path):
    """Multi-node training as a SLURM job starts it (one launcher per node, a c10d rendezvous),
    with both "nodes" on localhost: the same updates as two processes on one node."""
    endpoint = f"127.0.0.1:{free_port()}"
    command = distributed.torchrun_command(str(WORKER), 1, [str(tmp_path), "1"], nodes=2,
                                           endpoint=endpoint, run_id="two-nodes")
    launchers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(2)]
    outputs = [launcher.communicate(timeout=300)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(outputs)[-3000:]
    history, weights = results(tmp_path)
    reference, reference_weights = results(one_and_two / "2")
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in reference],
                                                         rel=1e-6)
    for name, weight in reference_weights.items():
        torch.testing.assert_close(weights[name], weight, rtol=1e-6, atol=1e-7)


def test_a_multi_node_job_starts_one_launcher_per_node_through_srun(monkeypatch):
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURMD_NODENAME": "gpu-07",
           "SLURM_CPUS_ON_NODE": "32"}
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ran = []
    monkeypatch.setattr(distributed.subprocess, "run", lambda command, check: ran.append(command))
    assert distributed.relaunch("train.py", 4, "a", nodes=2)
    [command] = ran
    assert command[:6] == ["srun", "--overlap", "--nodes=2", "--ntasks-per-node=1",
                           "--kill-on-bad-exit=1", "--cpus-per-task=32"]
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu-07:29742",
            "--rdzv-id=4242", "--nproc-per-node=4"} <= set(command)
    assert command[-2:] == ["train.py", "a"]
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    with pytest.raises(RuntimeError, match="has 1 node"):
        distributed.relaunch("train.py", 4, nodes=2)
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(RuntimeError, match="needs a SLURM allocation"):
        distributed.relaunch("train.py", 4, nodes=2)
