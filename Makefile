# consumer_auth — the two commands of the README, plus the benchmarks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench clean browser screenshots

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

# make demo PORT=9090 when 9080 is taken.
demo: $(VENV)/.installed
	$(BIN)/consumer-auth demo $(if $(PORT),--port $(PORT))

# The console's browser tests drive the system's Chromium (Playwright's own browser download needs a
# network): install Debian's package when it is missing and we may (root with apt-get); otherwise
# those tests skip, saying why (and fail under CONSUMER_AUTH_REQUIRE_SERVICES=1, as CI sets).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium for the browser tests (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# pytest runs on every core (pytest-xdist). Every test is independent of the others (its own servers on
# port 0, its own PostgreSQL schema and Redis keys, its own temporary files); one that ever needs to run
# alone goes in @pytest.mark.xdist_group("serial"), which --dist loadgroup keeps on one worker.
test: $(VENV)/.dev-installed browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --dist loadgroup

# Re-takes the screenshots of docs/console.md and docs/django.md (the browser tests write them there
# only when asked).
screenshots: $(VENV)/.dev-installed browser
	CONSUMER_AUTH_UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/test_console.py tests/test_django_admin_browser.py -q

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server,bcrypt,bench]'
	@touch $@

# Runs benchmarks/ and writes docs/benchmarks.md (installs nginx and wrk from Debian's packages if missing).
bench: $(VENV)/.bench-installed
	cd benchmarks && ../$(BIN)/python run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info
