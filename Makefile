# The two commands of the README: `make dev` (local stack) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
USER ?= alice

JS_DEPS := e2e/js/node_modules/.package-lock.json

.PHONY: install js dev test lint unit token demo smoke clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# The official Web upload SDK (pinned in e2e/js/package-lock.json), driven by the end-to-end tests.
$(JS_DEPS): e2e/js/package.json e2e/js/package-lock.json
	npm ci --prefix e2e/js --no-audit --no-fund

js: $(JS_DEPS)

dev: install js
	$(PY) -m devstack.run

demo: install js
	$(PY) -m devstack.demo

token: install
	@$(PY) -m devstack.token $(USER)

# After a deploy: `make smoke URL=https://…/api STAGE=dev SMOKE_TOKEN=<a user's JWT>` (local: no token needed).
smoke: install
	$(PY) -m deploy.smoke --url $(URL) --stage $(STAGE) $(if $(REPORT),--report $(REPORT))

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing: that is a failure here, never a silent pass.
unit: install js
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: lint unit

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache e2e/js/node_modules
