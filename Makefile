# Two entry points on a fresh machine: `make demo` (the lab demo) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/braid lab demo

test: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -ra

lint: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
