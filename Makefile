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
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[workflow,dev]'
	touch $@

install: $(BIN)/digi2real

demo: install
	$(BIN)/snakemake --cores 2 --configfile demo.yaml

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check digi2real tests scripts
	$(BIN)/ruff format --check digi2real tests scripts
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint --configfile demo.yaml

clean:
	rm -rf $(VENV) demo results .snakemake
