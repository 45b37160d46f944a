# newsq: `make demo` runs the demo, `make test` the whole test suite. Both build a
# virtualenv in .venv first (Python 3.11+, packages from PyPI; no services needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench-clean clean lock

$(BIN)/newsq: pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e ".[dev]"
	touch $(BIN)/newsq

demo: $(BIN)/newsq
	$(BIN)/newsq demo

# most tests wait on the worker processes and servers they start: two test processes
# halve the wall time on two cores (each starts its own Redis and PostgreSQL)
TEST_JOBS ?= 2

test: $(BIN)/newsq
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_JOBS)

# mypy cannot follow setuptools' package-dir, so it checks a view of the installed
# layout (newsq/ with config/, tasks/, workers/ linked in) made in build/typecheck.
TYPECHECK := build/typecheck

lint: $(BIN)/newsq
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/newsq
	for e in newsq/* config tasks workers; do ln -s "$(CURDIR)/$$e" $(TYPECHECK)/newsq/; done
	ln -s "$(CURDIR)/bench" $(TYPECHECK)/bench
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml

bench-clean: $(BIN)/newsq
	$(BIN)/python -m bench.clean_bench

clean:
	rm -rf $(VENV) build *.egg-info newsq-demo.db

# Re-pin requirements*.lock from pyproject.toml in a scratch virtualenv.
lock:
	rm -rf /tmp/newsq-lock && $(PYTHON) -m venv /tmp/newsq-lock
	/tmp/newsq-lock/bin/pip install --quiet --upgrade pip
	/tmp/newsq-lock/bin/pip install --quiet .
	/tmp/newsq-lock/bin/pip freeze --exclude-editable | grep -v '^newsq' > requirements.lock
	/tmp/newsq-lock/bin/pip install --quiet ".[dev]"
	/tmp/newsq-lock/bin/pip freeze --exclude-editable | grep -v '^newsq' \
	  | grep -vxF -f requirements.lock > requirements-dev.lock
