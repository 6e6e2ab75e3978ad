# consumer_auth — the two commands of the README, plus the benchmarks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "consumer_auth needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server]'
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/consumer-auth demo

# pytest runs on every core (pytest-xdist). Every test is independent of the others (its own servers on
# port 0, its own PostgreSQL schema and Redis keys, its own temporary files); one that ever needs to run
# alone goes in @pytest.mark.xdist_group("serial"), which --dist loadgroup keeps on one worker.
test: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --dist loadgroup

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server,bcrypt,bench]'
	@touch $@

# Runs benchmarks/ and writes docs/benchmarks.md (installs nginx and wrk from Debian's packages if missing).
bench: $(VENV)/.bench-installed
	cd benchmarks && ../$(BIN)/python run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info
