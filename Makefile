# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create a virtual environment in .venv (Python >= 3.11) and install CryoGEN into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch, pinned so that a fresh install never pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: install demo lint test test-fast test-slow clean gpu-wheels gpu-check copick-venv

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

# test: everything but the slow checks (minutes: it runs Snakemake); test-fast: the unit tests
# alone (no Snakemake, Dask cluster, SLURM or killed processes), in under a minute.
# lint: what CI checks before the tests: ruff (lint and format), mypy, and `snakemake --lint`
# (through its test, which allows no finding).
lint: install
	$(BIN)/ruff check cryogen tests
	$(BIN)/ruff format --check cryogen tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_workflow.py -k lint

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not workflow and not slurm and not integration and not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) results resources .snakemake .pytest_cache

# copick's own API, to check what `cryogen copick export` writes (tests/test_copick.py uses it
# when present). A separate venv: copick 1.31 needs zarr<3, CryoGEN zarr>=3. Not part of `make test`.
COPICK ?= copick==1.31.0
VENV_COPICK ?= .venv-copick
copick-venv: $(VENV_COPICK)/bin/copick
$(VENV_COPICK)/bin/copick:
	$(PYTHON) -m venv $(VENV_COPICK)
	echo '*' > $(VENV_COPICK)/.gitignore
	$(VENV_COPICK)/bin/pip install --quiet --disable-pip-version-check $(COPICK)

# GPU figures (`cryogen benchmark --speed` on CUDA) on a machine that has torch with CUDA but
# cannot reach a package index: `make gpu-wheels` here fetches, into .whl/, the wheels CryoGEN
# needs beyond what such an image usually holds (numpy, scipy, torch, matplotlib, tqdm); carry
# .whl/ there and run `make gpu-check OUT=folder`, which installs them into /tmp/site and writes
# the benchmark's table to OUT/speed.txt. Versions are those the CPU install resolved.
GPU_PY ?= 3.12
GPU_WHEELS := mrcfile==1.5.4 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
	dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 zict==3.0.0 tblib==3.2.2 tornado==6.6.1

gpu-wheels: install
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PY) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--platform manylinux1_x86_64 -d .whl $(GPU_WHEELS)

OUT ?= gpu-out
gpu-check:
	mkdir -p $(OUT)
	python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
	nvidia-smi | tee $(OUT)/nvidia-smi.txt
	PYTHONPATH=/tmp/site:$(CURDIR) PYTHONUNBUFFERED=1 python3 -m cryogen.cli benchmark --speed --full-size \
		--workdir /tmp/cryogen-gpu 2>&1 | tee $(OUT)/speed.txt
