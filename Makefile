# Two commands for a new user: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of this torch version lies on disk on our machines; any other version pulls several GB.
TORCH := torch==2.13.0

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	touch $@

$(VENV)/.installed-run: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e '.[nulog]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e '.[nulog,dev]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(BIN)/training-controller demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

$(VENV)/.installed-bench: $(VENV)/.installed-dev pyproject.toml
	$(BIN)/pip install --quiet -e '.[nulog,dev,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check training_controller nulog tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
