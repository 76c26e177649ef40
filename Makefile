# make demo: install, then extract a bundled synthetic dataset, picture it, pretrain on it and evaluate.
# make test: install, then lint, run the test suite, and smoke-test the wheel (built, installed into a fresh venv
# outside the checkout, used from an empty folder: .ci/wheel_smoke.py).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    := demo

.PHONY: install demo test lint wheel-smoke bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned first: 2.13.0 is the local CPU build here; an unpinned torch pulls GBs of CUDA wheels.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DEMO_METHOD ?= rgb

demo: install
	rm -rf $(DEMO)
	$(BIN)/mvtools synth $(DEMO)/videos --videos 16 --seed 0
	$(BIN)/mvtools extract $(DEMO)/videos -o $(DEMO)/store.zarr
	$(BIN)/mvtools info $(DEMO)/store.zarr
	$(BIN)/mvtools show $(DEMO)/store.zarr right__right_0001 -o $(DEMO)/right.png --frames 8:12
	$(BIN)/mvtools train --config $(DEMO_METHOD)_tiny --store $(DEMO)/store.zarr \
		--out $(DEMO)/run --steps 60
	$(BIN)/mvtools eval --checkpoint $(DEMO)/run/checkpoint.pt --store $(DEMO)/store.zarr

lint: install
	$(BIN)/ruff check mvtools trainer tests benchmarks .ci

test: lint
	$(BIN)/python -m pytest -q
	$(PY) .ci/wheel_smoke.py

wheel-smoke:
	$(PY) .ci/wheel_smoke.py

bench: install
	$(BIN)/python benchmarks/extract.py

clean:
	rm -rf $(VENV) $(DEMO) *.egg-info
