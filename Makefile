# `make demo` and `make test` are the two commands of the README; each creates .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
WORKDIR ?= runs/demo
# apt-get needs root; anyone else gets it through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: reproduce demo test test-slow bench bazel-test venv

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[cpu]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[cpu,test]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) run.py --stage all --config configs/demo.py --workdir $(WORKDIR)

# The experiment on real photos (configs/real_photos.py): about 3 hours of training on two
# cores plus the attacks, resumed from runs/real_photos after any interruption, then copied to
# results/. Progress saved by `make save-progress` (committed, for a session on another
# machine) is restored first, never over files the workdir already has. To check the
# published numbers from scratch, give the rerun its own workdir, progress and results, e.g.
#   make reproduce EXPERIMENT_WORKDIR=runs/rerun EXPERIMENT_PROGRESS=results/rerun/progress EXPERIMENT_RESULTS=results/rerun
# which then compares every accuracy with the published ones (tools/check_reproduction.py).
PUBLISHED_RESULTS = results/real_photos
EXPERIMENT_WORKDIR ?= runs/real_photos
EXPERIMENT_PROGRESS ?= results/real_photos/progress
EXPERIMENT_RESULTS ?= results/real_photos
reproduce: $(VENV)/.installed
	$(PY) tools/experiment_progress.py restore $(EXPERIMENT_PROGRESS) $(EXPERIMENT_WORKDIR)
	$(PY) run.py --stage compare --config configs/real_photos.py --workdir $(EXPERIMENT_WORKDIR)
	$(PY) tools/publish_results.py $(EXPERIMENT_WORKDIR) $(EXPERIMENT_RESULTS)
	@if [ "$(EXPERIMENT_RESULTS)" != "$(PUBLISHED_RESULTS)" ]; then $(MAKE) --no-print-directory check-reproduction; fi

.PHONY: check-reproduction
check-reproduction:
	$(PY) tools/check_reproduction.py $(PUBLISHED_RESULTS) $(EXPERIMENT_RESULTS)

.PHONY: save-progress
save-progress:
	$(PY) tools/experiment_progress.py save $(EXPERIMENT_WORKDIR) $(EXPERIMENT_PROGRESS)

# The experiment on robust models (configs/robust_photos.py): the margin search under
# adversarial training (under an hour), then the arms (hours; ROBUST_PART=:seed0 trains and
# judges the seed-0 models alone), then the attacks, carried across machines as above by
# `make save-progress-robust` and this target, which redoes nothing that is done.
ROBUST_WORKDIR ?= runs/robust_photos
ROBUST_PROGRESS ?= results/robust_photos/progress
ROBUST_RESULTS ?= results/robust_photos
ROBUST_PART ?=
.PHONY: reproduce-robust save-progress-robust
reproduce-robust: $(VENV)/.installed
	$(PY) tools/experiment_progress.py restore $(ROBUST_PROGRESS) $(ROBUST_WORKDIR)
	$(PY) run.py --stage tune --config configs/robust_photos.py:tune --workdir $(ROBUST_WORKDIR)
	$(PY) run.py --stage compare --config configs/robust_photos.py$(ROBUST_PART) --workdir $(ROBUST_WORKDIR)
	$(PY) tools/publish_results.py $(ROBUST_WORKDIR) $(ROBUST_RESULTS)

save-progress-robust:
	$(PY) tools/experiment_progress.py save $(ROBUST_WORKDIR) $(ROBUST_PROGRESS)

# The experiment's most robust model so far (the default arm has the highest worst case at
# 8/255 in results/robust_photos/results.json: tests/published_models_test.py checks it) as
# a SavedModel for TF Serving, from the committed progress, in seconds and without
# training: $(ROBUST_WORKDIR)/export/$(ROBUST_ARM)/1/. ROBUST_ARM=NAME takes another arm.
ROBUST_ARM ?= at_ce
.PHONY: robust-model
robust-model: $(VENV)/.installed
	$(PY) tools/experiment_progress.py restore $(ROBUST_PROGRESS) $(ROBUST_WORKDIR)
	$(PY) run.py --stage export --config configs/robust_photos.py --workdir $(ROBUST_WORKDIR) \
	  --config.export.model=$(ROBUST_ARM) --config.export.name=$(ROBUST_ARM)

# Two test processes at a time (pytest-xdist; each file's tests stay in one process, so a
# module's fixtures run once): 1.7x faster than one on the 2-core machines (12 min 44 s ->
# 7 min 25 s for the same 472 tests, 2026-12-08). TEST_JOBS=0 runs them all in one process.
TEST_JOBS ?= 2
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -m slow --run-slow tests

# Every figure of the Performance section, written to bench/results/<date>-<machine>.json and
# bench/results.md. BENCH_FLAGS=--quick shortens it; BENCH_FLAGS=--demo also times `make demo`.
# The PyTorch peer's rows need bench/.peer-venv (`make bench-peer` makes it), else say skipped.
# First, in that venv, tests/torch_peer_test.py: the peer computes what the project computes.
# BENCH_ISA=AVX2 measures as a CPU without AVX-512 would, on this one: oneDNN (TensorFlow's and
# PyTorch's), ATen and XLA are kept to AVX2, bfloat16 counts as absent (common/cpu.py); the
# results file is named ...-as-avx2.json and says "emulated"; bench/results.md is left as it is.
BENCH_FLAGS ?=
BENCH_ISA ?=
BENCH_ENV = $(if $(BENCH_ISA),$(if $(filter AVX2,$(BENCH_ISA)),ONEDNN_MAX_CPU_ISA=AVX2 \
	ATEN_CPU_CAPABILITY=avx2 XLA_FLAGS="$$XLA_FLAGS --xla_cpu_max_isa=AVX2",\
	$(error BENCH_ISA=$(BENCH_ISA): the one instruction set it can emulate is AVX2)))
bench: $(VENV)/.installed-test
	@if [ ! -x $(PEER_VENV)/bin/python ]; then \
		echo "tests/torch_peer_test.py skipped: no $(PEER_VENV) (make bench-peer makes it)"; \
	elif ! $(PEER_VENV)/bin/python -c "import pytest" 2>/dev/null; then \
		echo "tests/torch_peer_test.py skipped: no pytest in $(PEER_VENV) (make bench-peer adds it)"; \
	else \
		$(BENCH_ENV) $(PEER_VENV)/bin/python -m pytest -q tests/torch_peer_test.py; \
	fi
	$(BENCH_ENV) $(PY) bench/run_all.py $(BENCH_FLAGS)

# The same tests under Bazel (WORKSPACE, BUILD, .bazelrc), offline: Debian's Bazel 4 is installed
# the first time, Python is .venv's (tools/python/venv.bzl), Bazel's cache stays in ~/.cache/bazel.
bazel-test: $(VENV)/.installed-test bazel-installed
	bazel test --test_output=errors //...

# What CI runs after `make test`: Bazel builds every target (so a broken BUILD fails) and runs
# the tests tagged "smoke" (a loss test, an archive test and the command-line errors through
# the `run` binary's runfiles), about 2 minutes, instead of running the whole suite twice.
bazel-smoke: $(VENV)/.installed-test bazel-installed
	bazel test --test_output=errors --test_tag_filters=smoke //...

.PHONY: bazel-installed bazel-smoke
bazel-installed:
	command -v bazel >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y bazel-bootstrap; }

# The PyTorch peer benchmark (bench/peer_bench.py) in a venv of its own, bench/.peer-venv: the
# project plus the `bench-peer` extra (torch, CPU build), so torch never enters .venv. Where no
# CPU-only torch wheel is in pip's view, pass one, e.g.
# `make bench-peer PEER_PIP_FLAGS='--extra-index-url https://download.pytorch.org/whl/cpu'`.
PEER_VENV := bench/.peer-venv
PEER_PIP_FLAGS ?=
PEER_PIP := $(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	-c constraints.txt -c bench/peer-constraints.txt $(PEER_PIP_FLAGS)

$(PEER_VENV)/.installed: setup.py constraints.txt bench/peer-constraints.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PIP) -e '.[cpu,bench-peer]'
	$(PEER_VENV)/bin/python -c "import torch; print('torch', torch.__version__, \
		'(CUDA build: pulls the nvidia-* packages)' if torch.version.cuda else '(CPU build)')"
	touch $@

.PHONY: bench-peer
bench-peer: $(PEER_VENV)/.installed
	$(PEER_VENV)/bin/python bench/peer_bench.py
