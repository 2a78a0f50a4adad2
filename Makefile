# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create a virtual environment in .venv (Python >= 3.11) and install CryoGEN into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
# CPU build of PyTorch, pinned so that a fresh install never pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-slow clean

$(BIN)/cryogen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/cryogen

demo: install
	mkdir -p $(DEMO)
	$(BIN)/cryogen simulate $(DEMO)/obs.mrc --truth $(DEMO)/truth.mrc --shape 64 128 128 --tilt-range -60 60 --snr 0.5 --seed 1 --voxel-size 10
	$(BIN)/cryogen chunk $(DEMO)/obs.mrc $(DEMO)/obs.zarr --tile 64 --overlap 16 --tilt-range -60 60
	$(BIN)/cryogen stitch $(DEMO)/obs.zarr $(DEMO)/stitched.mrc
	$(BIN)/cryogen info $(DEMO)/stitched.mrc
	$(BIN)/cryogen evaluate $(DEMO)/stitched.mrc $(DEMO)/truth.mrc --tilt-range -60 60

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
