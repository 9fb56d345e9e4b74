# The two commands of the README: `make dev` (local stack) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
USER ?= alice

.PHONY: install dev test lint unit token demo clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

dev: install
	$(PY) -m devstack.run

token: install
	@$(PY) -m devstack.token $(USER)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing: that is a failure here, never a silent pass.
unit: install
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: lint unit

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
