# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create a virtual environment in .venv (Python >= 3.11) and install CryoGEN into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch, pinned so that a fresh install never pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-slow clean

$(BIN)/cryogen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/cryogen

# The demo is the Snakemake workflow on its embedded data: config/tomograms.tsv lists no
# tomogram, so it simulates two, then chunks, trains, reconstructs, stitches and reports them.
demo: install
	$(BIN)/snakemake --cores all
	$(BIN)/snakemake --cores all --report results/report.html
	@echo "restored tomograms: results/*/restored.mrc; figures: results/report.html"

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) results resources .snakemake .pytest_cache
