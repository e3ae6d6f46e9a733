# Quick start:  make demo   (sets up .venv, tracks a generated phantom, writes demo_output/)
#               make test   (sets up .venv, runs the test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU wheel so that a fresh machine does not pull a multi-GB CUDA build;
# on a GPU machine install the CUDA build of torch into the venv first (make venv TORCH=torch==2.13.0+cu126 ...).
TORCH ?= torch==2.13.0
# two workers (pytest-xdist), whole files each: most of the suite's time is Numba compiling kernels, one
# core per compilation; files keep the tests that share a kernel together
PYTEST_ARGS ?= -m "not gpu and not slow" -n 2 --dist loadfile

.PHONY: venv demo test test-gpu bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,vtk]"
	touch $@

demo: venv
	$(PY) -m DiffTractographyLib.demo --out demo_output

test: venv
	$(PY) -m pytest Testing $(PYTEST_ARGS)

test-gpu: venv
	$(PY) -m pytest Testing -m gpu

bench: venv
	$(PY) benchmarks/bench_tracking.py

clean:
	rm -rf $(VENV) demo_output
