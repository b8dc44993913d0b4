# The Training Memory Handbook. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SETUP  := $(VENV)/.setup-done
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The torch requirement. Where a CPU wheel of 2.13.0 lies on disk (our CI machines) this pin installs
# it; elsewhere the same pin downloads PyPI's default build (CUDA on Linux, several GB). Choose another:
#   make handbook TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0
export NO_MKDOCS_2_WARNING := 1

.DEFAULT_GOAL := help
.PHONY: help setup system handbook test test-fast bench run serve clean gpu-reference gpu-reference-rehearsal

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-23s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(SETUP): pyproject.toml requirements/site.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -r requirements/site.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

system: ## install Chromium and poppler-utils (for the PDFs and browser tests) when missing
	@command -v chromium >/dev/null && command -v pdfinfo >/dev/null || \
	  ( $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium poppler-utils )

setup: $(SETUP) system ## create .venv and install everything (torch: see TORCH above, mkdocs<2, Chromium, ...)

handbook: setup ## run the experiments for this host, build site/, site/handbook.pdf and site/cheatsheet.pdf
	$(BIN)/handbook build

# pytest-xdist: one worker per core, a test file per worker (the real built site is made once: conftest).
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile

test: setup ## run the whole test suite (what CI runs)
	$(PYTEST)

test-fast: setup ## the fast tier: formulas, runner and site on canned results (the edit-test loop)
	$(PYTEST) -m fast

bench: setup ## time the test suite (whole and fast tier), a cold build, a no-change rebuild, a one-page rebuild
	$(BIN)/python -m generator.bench

run: setup ## run the experiments only (cached)
	$(BIN)/handbook run

serve: setup ## serve the site with live reload on http://127.0.0.1:8000
	$(BIN)/handbook serve

clean: ## remove the built site and caches (keeps results/ and .venv)
	rm -rf site .cache

# The GPU reference run (generator/gpu_plan.py). On the GPU host, from the repository root, with that
# host's own python3 (torch, numpy, transformers, pytest; no venv, no pip, no setup):
#   make gpu-reference OUT=<folder>      (OUT may also come from the environment)
# GPU_PLAN_ARGS passes options on (the rehearsal's --profile quick, a smaller --budget, ...).
GPU_PLAN_ARGS ?=
gpu-reference: ## GPU host: every experiment within 420 s; OUT/results.tgz (results/<host>/ + log). Plain python3
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m generator gpu-plan $(if $(OUT),--out "$(OUT)") $(GPU_PLAN_ARGS)

# The rehearsal: a venv with only what the GPU host has (torch, numpy, transformers and its dependencies,
# pytest; versions from requirements/site.txt), the same plan through `make gpu-reference` on this CPU in
# the quick profile with a smaller budget, then the archive unpacked and a site built with two hosts.
GPU_VENV := .venv-gpu
# The quick profile's predictions are this host's committed durations, measured idle; this host is shared,
# so the rehearsal gives each experiment 4x its prediction (the GPU host: 2x).
REHEARSAL_BUDGET ?= 300
REHEARSAL_MARGIN ?= 4
$(GPU_VENV)/.setup-done: requirements/site.txt
	rm -rf $(GPU_VENV)
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install --quiet $(TORCH) numpy transformers pytest -c requirements/site.txt
	touch $@

gpu-reference-rehearsal: setup $(GPU_VENV)/.setup-done ## rehearse gpu-reference here (torch-only venv, quick profile), check archive + 2-host site
	$(BIN)/python -m generator.gpu_rehearsal --python $(GPU_VENV)/bin/python --budget $(REHEARSAL_BUDGET) \
	  --margin $(REHEARSAL_MARGIN)
