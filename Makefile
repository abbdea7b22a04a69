# `make demo` and `make test` are the two commands of the README; each creates .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
WORKDIR ?= runs/demo

.PHONY: demo test test-slow bench bazel-test venv

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

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -m slow --run-slow tests

bench: $(VENV)/.installed-test
	$(PY) bench/run_all.py
