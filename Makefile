# Every target sets itself up on a fresh machine: .venv, the package, and (as root) Debian's
# Fashion-MNIST. Without root the data step says how to get it and the demo falls back to the
# bundled scikit-learn digits.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo examples test test-all bench gpu-check lint setup data clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

data:
	@if [ -f $(FMNIST) ] || [ -n "$$FASTUNLEARN_DATA" ]; then \
		echo "fashion-mnist: found"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "fashion-mnist: installing Debian's dataset-fashion-mnist"; \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || \
		echo "fashion-mnist: apt-get failed; the demo will use the bundled digits data"; \
	else \
		echo "fashion-mnist: missing. Run 'sudo apt-get install dataset-fashion-mnist' or put the" \
		     "4 idx .gz files in \$$FASTUNLEARN_DATA/fashion-mnist; falling back to digits."; \
	fi

# the eleven fast methods (the study's default adds methods III, too slow for a 10-minute demo)
DEMO_METHODS := ft ga neggrad_plus rl salun boundary_shrink scrub two_stage fisher influence zero_shot

# The demo table + its report, then the cost-quality study on the same task (it reuses the
# demo's original and gold models from runs/pool). Without Fashion-MNIST: digits, class 3.
demo: setup data
	$(VENV)/bin/fastunlearn demo --out runs/demo --pool runs/pool --force
	$(VENV)/bin/fastunlearn report runs/demo
	@if [ -f $(FMNIST) ] || [ -n "$$FASTUNLEARN_DATA" ]; then task="--dataset fashion-mnist --forget class:Coat"; \
	else task="--dataset digits --forget class:3"; fi; \
	$(VENV)/bin/fastunlearn study cost-quality $$task --pool runs/pool --methods $(DEMO_METHODS) \
		--out runs/studies/cost-quality

# Example reports of the other four studies (digits, small models; a few minutes on 2 CPU
# cores), copied with their plots to docs/examples/ — what the README links.
EX := --dataset digits --epochs 10 --pool runs/examples/pool --no-progress
examples: setup
	$(VENV)/bin/fastunlearn study forget-scaling $(EX) --methods ga rl ft neggrad_plus --seeds 2 \
		--out runs/examples/forget-scaling
	$(VENV)/bin/fastunlearn study cross-arch $(EX) --models small_cnn lenet5 resnet18 vit_tiny \
		--methods ga rl ft --out runs/examples/cross-arch
	$(VENV)/bin/fastunlearn study collateral $(EX) --methods ga rl ft \
		--option 'classes=["3","5","8"]' --out runs/examples/collateral
	$(VENV)/bin/fastunlearn study layer-sensitivity $(EX) --methods ga rl ft --forget class:3 \
		--out runs/examples/layer-sensitivity
	@for s in forget-scaling cross-arch collateral layer-sensitivity; do \
		mkdir -p docs/examples/$$s && cp runs/examples/$$s/report.md runs/examples/$$s/*.png \
		runs/examples/$$s/summary.csv docs/examples/$$s/; done

test: setup data
	$(PY) -m pytest -q

test-all: setup data
	$(PY) -m pytest -q -m ""

bench: setup
	$(PY) -m pip install -q -e '.[dev,bench]' || echo "bench: Opacus/BackPACK not installed; their rows are skipped"
	$(PY) -m pytest benchmarks -q --benchmark-only

# On a lent GPU machine: venv + package, every gpu-marked test, the kernel/compile/batched
# benchmarks on CUDA → benchmarks/results/<gpu-name>.csv, and a check that no ratio rose more
# than 10 % over the last committed row (under 8 min on an H100 once the venv exists).
# `python3 benchmarks/gpu_check.py --dry-run` lists the steps without running them.
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

lint: setup
	$(VENV)/bin/ruff check fastunlearn tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
