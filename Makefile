# gdjax: the README's commands. Everything sets itself up in .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= test,data,plot
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
REPRODUCE_ARGS ?=
REPRODUCE_ALL_ARGS ?= --commit

.DEFAULT_GOAL := help
.PHONY: help venv data test bench bench-fd-kernel bench-estimators reproduce reproduce-reference lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)  ## create .venv and install gdjax with its extras (test,data,plot)

data: $(STAMP)  ## get Fashion-MNIST (Debian's dataset-fashion-mnist via apt-get), or say how; MNIST optional
	$(BIN)/python experiments/get_data.py

test: $(STAMP)  ## run the test suite (CPU, a few minutes)
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

bench: $(STAMP)  ## the main job: FD vs jax.grad into runs/, printed beside the committed reference
	$(BIN)/python benchmarks/fd_vs_grad.py $(BENCH_ARGS)

.PHONY: bench-full bench-gpu bench-reference
bench-full: $(STAMP)  ## maintainers: the full sweep P = 1e2..1e6 (hours; resumable) into benchmarks/results/<platform>/
	$(BIN)/python benchmarks/fd_vs_grad.py --full --committed --resume $(BENCH_ARGS)

bench-reference: $(STAMP)  ## maintainers: rerun `make bench` into the committed benchmarks/results/<platform>/
	$(BIN)/python benchmarks/fd_vs_grad.py --committed $(BENCH_ARGS)

bench-gpu:  ## on one NVIDIA GPU, the machine's own python3 and jax (<= 8 min): float32 vs TF32 FD first, then the sweeps: benchmarks/results/gpu/
	PYTHONPATH=. python3 benchmarks/bench_gpu.py $(BENCH_ARGS)

bench-fd-kernel: $(STAMP)  ## the FD kernel vs its ceiling (a big matmul) and fd-loop, whole gradients, N = 10 and 1000
	$(BIN)/python benchmarks/fd_kernel.py --chunks 44,128,272 $(BENCH_ARGS)

bench-estimators: $(STAMP)  ## the estimator ladder (layer-aware FD, node perturbation, SPSA, ...)
	$(BIN)/python benchmarks/estimators.py $(BENCH_ARGS)

bench-problems: $(STAMP)  ## maintainers: the any-cost suite (FD, jax.grad, check_grad vs torch) into benchmarks/results/cpu/
	$(BIN)/python benchmarks/problems.py --out benchmarks/results/cpu/ $(BENCH_ARGS)

.PHONY: bench-throughput
bench-throughput: $(STAMP)  ## one training epoch: gdjax vs a PyTorch eager loop (if installed) vs a NumPy loop
	$(BIN)/python benchmarks/training_throughput.py $(BENCH_ARGS)

.PHONY: gradcheck
gradcheck: $(STAMP)  ## check_grad vs jax check_grads and torch gradcheck: planted bugs, false alarms, speed (minutes)
	$(BIN)/python benchmarks/gradcheck.py $(BENCH_ARGS)

.PHONY: bench-budget
bench-budget: data  ## which estimator trains best at equal seconds / forward passes (Fashion-MNIST)
	$(BIN)/python benchmarks/equal_budget.py $(BENCH_ARGS)

reproduce: data  ## run every experiment of the lecture into runs/reproduce-<date>/ (results/ stays the reference)
	$(BIN)/python experiments/run_all.py $(REPRODUCE_ARGS)

reproduce-reference: data  ## maintainers: regenerate the committed results/ and figures/ of the experiments
	$(BIN)/python experiments/run_all.py --reference

.PHONY: report reproduce-all
report: $(STAMP)  ## render every results table of README.md and docs/ from the committed results files
	$(BIN)/gdjax report

reproduce-all: $(STAMP)  ## maintainers: regenerate every committed result (resumable), then `make report`
	$(BIN)/python -m gdjax.report.reproduce $(REPRODUCE_ALL_ARGS)

lint: $(STAMP)  ## byte-compile everything (cheap syntax check)
	$(BIN)/python -m compileall -q gdjax benchmarks experiments tests

clean:  ## remove caches (keeps .venv)
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
