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
.PHONY: help setup system handbook test test-fast bench run serve clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

# pytest-xdist: one worker per core, a test file per worker (the reader tests share one built site).
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
