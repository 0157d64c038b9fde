"""What every rule's script needs: its output and errors in the rule's log, threads, seeds."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("vldistill")


@contextlib.contextmanager
def rule_logging(log_path: str | Path | None, threads: int = 1) -> Iterator[logging.Logger]:
    """Send stdout/stderr (file descriptors, so tqdm and C libraries too) to the rule's log.

    A failure is logged with its traceback before it propagates, so the log alone explains it.
    """
    set_threads(threads)
    if log_path is None:
        _configure_logging()
        yield log
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a", buffering=1) as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        _configure_logging()
        start = time.perf_counter()
        try:
            yield log
            log.info("done in %.1f s", time.perf_counter() - start)
        except BaseException:
            log.error("failed after %.1f s:\n%s", time.perf_counter() - start,
                      traceback.format_exc())
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def set_threads(threads: int) -> None:
    """Keep torch within the cores Snakemake granted this job."""
    import torch

    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(threads)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rule_settings(smk: Any) -> dict[str, Any]:
    """A rule's params as keyword arguments of its stage: each param is named after the stage
    argument it sets, so a setting goes from the rule to the stage without a script naming it.
    ``code`` (the source hash every rule carries for its re-run trigger) is not a setting."""
    return {name: value for name, value in smk.params.items() if name != "code"}


# A training job's host memory, from what it loads (benchmarks/memory.md): the process with
# torch, CUDA and the libraries; the tables it parses (tokenised captions, task rows, caption
# truth), which pre-training measured at ~160x their parquet size on the synthetic data (their
# parquet compresses well, real captions less, so 200x is an upper bound there); and every model
# it starts from four times over (weights, gradients, AdamW's two moments). Pixel files are read
# a batch at a time and do not count.
PROCESS_MB = 4000
TABLE_FACTOR = 200
MODEL_FACTOR = 4


def training_mem_mb(sizes_mb: dict[str, float], attempt: int = 1) -> int:
    """``mem_mb`` of a training job whose inputs have these sizes (path -> MB); a retry after an
    out-of-memory kill (``attempt`` 2, 3) asks for that many times as much."""
    tables = sum(mb for path, mb in sizes_mb.items() if path.endswith(".parquet"))
    models = sum(mb for path, mb in sizes_mb.items() if path.endswith(".safetensors"))
    return int(attempt * (PROCESS_MB + TABLE_FACTOR * tables + MODEL_FACTOR * models))
