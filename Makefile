# The two set-up commands of README.md: `make demo` and `make test`, each from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

$(BIN)/digi2real: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch; clusters install the CUDA build that matches their driver.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $@

install: $(BIN)/digi2real

demo: install
	$(BIN)/digi2real demo-assets demo
	$(BIN)/digi2real index digiface --config config.yaml --out results/index/digiface.parquet
	$(BIN)/digi2real index ffhq --config config.yaml --out results/index/ffhq.parquet
	$(BIN)/digi2real embed digiface --config config.yaml --index results/index/digiface.parquet --out results/embeddings/digiface.h5
	$(BIN)/digi2real embed ffhq --config config.yaml --index results/index/ffhq.parquet --out results/embeddings/ffhq.h5
	$(BIN)/digi2real estimate-delta --config config.yaml --real results/embeddings/ffhq.h5 --synthetic results/embeddings/digiface.h5 --out results/delta.h5
	$(BIN)/digi2real plan --config config.yaml --embeddings results/embeddings/digiface.h5 --out-dir results/plan
	$(BIN)/digi2real generate --config config.yaml --plan results/plan/0.h5 --delta results/delta.h5 --manifest results/shards/0/manifest.parquet
	$(BIN)/digi2real generate --config config.yaml --plan results/plan/1.h5 --delta results/delta.h5 --manifest results/shards/1/manifest.parquet

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check digi2real tests
	$(BIN)/ruff format --check digi2real tests

clean:
	rm -rf $(VENV) demo results .snakemake
