# The two set-up commands of README.md: `make demo` and `make test`, each from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

# PyTorch, from pip's configured index (nothing else is asked). Which build that is depends on
# the index: from PyPI, on Linux x86-64, torch==2.13.0 is the CUDA 13 build, 29 wheels and
# 2.74 GB to download (measured 2026-11-23 with pip's --dry-run --report); the CPU build's wheel
# is 192 MB: `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`. The line printed
# before the download names the build pip picked. On a cluster, install the CUDA build that
# matches the driver first (README, "Set up").
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

# pip byte-compiles what it installs one file at a time, 18,000 files: its two installs took 74 s
# with it and 40 s without on 2 cores (measured 2026-12-05 on fresh venvs). They skip it
# (--no-compile), and one compileall over the venv writes the same .pyc files on every core,
# but for the packages' own test suites (their tests/ folders: 3,400 files that nothing
# imports): 20 s instead of 23 s. As pip does, it skips a file this Python cannot compile
# (torch ships a test helper in 3.12 syntax). Imports need those files:
# PYTHONDONTWRITEBYTECODE may be set.

$(BIN)/digi2real: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --dry-run --report $(VENV)/torch-plan.json \
		$(TORCH_FROM) '$(TORCH)'
	$(BIN)/python scripts/torch_plan.py $(VENV)/torch-plan.json
	$(BIN)/python -m pip install --quiet --no-compile $(TORCH_FROM) '$(TORCH)'
	$(BIN)/python -m pip install --quiet --no-compile --constraint constraints.txt \
		--editable '.[workflow,dev]'
	$(BIN)/python -c 'import compileall, re; compileall.compile_dir("$(VENV)/lib", quiet=2, \
		workers=0, rx=re.compile("site-packages/.*/tests/"))'
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
