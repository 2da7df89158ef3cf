# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup setup-gpu check-gpu-install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the 2.14.1/0.29.1 pair (transformers 5's Qwen2.5-VL processor needs torchvision).
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# A CUDA machine with the vLLM engine: no torch pins, vLLM's own (torch 2.14.0 / torchvision 0.29.0)
# decide; the same as `pip install -e '.[dev,vllm]'`. bench/check_gpu_install.py checks it resolves.
setup-gpu:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,vllm]'

# Resolve the setup-gpu install (dry run) and run the core tests under its transformers, on the CPU.
check-gpu-install: $(STAMP)
	$(BIN)/python bench/check_gpu_install.py

demo: $(STAMP)
	$(BIN)/vlmrl demo

# Last, the core tests again under the oldest transformers the [vllm] extra can pull (~2 min).
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q
	$(BIN)/mkdocs build --strict --site-dir .site
	$(BIN)/python bench/check_gpu_install.py --floor-only

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf runs/ .pytest_cache .site
