# The README's two commands. Both run the idempotent set-up first.
VENV ?= .venv
PY := $(VENV)/bin/python
BT := $(VENV)/bin/boosting-tickets

.PHONY: setup test demo lint format

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

demo: setup
	bash scripts/demo.sh
