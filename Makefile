# The two commands a new machine needs: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQS := requirements.txt offline_cloud/requirements.txt requirements-dev.txt bgremove_cli/requirements.txt constraints.txt
STAMP := $(VENV)/.installed
ENV ?= dev
IMAGES ?=

.PHONY: help venv test unit-coverage lint demo stack soak burst fuzz reconcile bench plan deploy clean

help:
	@echo "make demo     run the pipeline end to end on the offline stack (IMAGES=\"a.jpg b.png\" to use your own)"
	@echo "make test     run the test suite (sets up .venv first)"
	@echo "make stack    start the offline cloud in the foreground until Ctrl-C"
	@echo "make lint     ruff check, format check and mypy"
	@echo "make unit-coverage  the unit tier's line coverage of the core"
	@echo "make soak     the fault-injected soak, 500 images (SOAK_IMAGES=N to change)"
	@echo "make burst    10,000 photos at once with the API's limits on, then the low-credit case (BURST_IMAGES=N, BURST_FAULTS=1, BURST_WEBHOOKS=off: none sent, results by polling; BURST_BUDGET=N: DAILY_PREDICTION_BUDGET, the rest held); writes burst-results.json"
	@echo "make fuzz     the webhook fuzz run with new random cases (FUZZ_EXAMPLES=5000)"
	@echo "make reconcile  run one reconciler pass against the running 'make stack'"
	@echo "make bench    benchmarks, written to bench/results.json and bench/RESULTS.md"
	@echo "make plan ENV=dev | make deploy ENV=dev   Terraform (needs terraform and gcloud credentials)"

venv: $(STAMP)

$(STAMP): $(REQS)
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (Cloud Functions python311); set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -r requirements.txt -r offline_cloud/requirements.txt -r requirements-dev.txt -r bgremove_cli/requirements.txt
	@# The operators' command, bgremove (pyproject's [project.scripts]), run from this checkout.
	@printf '#!/bin/sh\nPYTHONPATH="%s$${PYTHONPATH:+:$$PYTHONPATH}" exec "%s" -m bgremove_cli "$$@"\n' "$(CURDIR)" "$(CURDIR)/$(PY)" > $(VENV)/bin/bgremove
	@chmod +x $(VENV)/bin/bgremove
	@touch $(STAMP)

# The fast unit tier first (no processes, seconds); a failure there stops before the stack tests.
test: venv
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest tests/unit -q -x
	$(PY) -m pytest --ignore=tests/unit

# Line coverage of the core by the unit tier alone.
unit-coverage: venv
	$(PY) -m coverage run --include='bgremove/*' -m pytest tests/unit -q
	$(PY) -m coverage report -m --include='bgremove/complete.py,bgremove/reconcile.py,bgremove/submit.py,bgremove/jobs.py'

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

demo: venv
	$(PY) -m offline_cloud.demo $(IMAGES)

stack: venv
	$(PY) -m offline_cloud $(STACK_ARGS)

soak: venv
	$(PY) -m offline_cloud.soak --images $(or $(SOAK_IMAGES),500) --json soak-results.json

# The predictions service runs as a labelled fleet stand-in here (see offline_cloud/burst.py).
# BURST_WEBHOOKS=off: the service sends no webhook (a proxy that forwards none); results by polling.
burst: venv
	BURST_IMAGES=$(or $(BURST_IMAGES),10000) BURST_FAULTS=$(BURST_FAULTS) BURST_WEBHOOKS=$(BURST_WEBHOOKS) BURST_BUDGET=$(BURST_BUDGET) $(PY) -m offline_cloud.burst --json burst-results.json

bench: venv
	$(PY) -m bench

FUZZ_EXAMPLES ?= 5000
fuzz: venv
	BGREMOVE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) BGREMOVE_FUZZ_RANDOM=1 $(PY) -m pytest tests/hostile/test_fuzz_webhook.py -q --timeout=0

reconcile: venv
	$(PY) -m offline_cloud.reconcile

plan:
	bash infra/tf.sh plan $(ENV)

deploy:
	bash infra/tf.sh deploy $(ENV)

clean:
	rm -rf $(VENV) .venv-* .stack .cache demo-output .pytest_cache .ruff_cache .mypy_cache .coverage soak-results.json burst-results.json
