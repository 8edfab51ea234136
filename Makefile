# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast doctor clean

$(STAMP): requirements/backend.txt requirements/test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/test.txt
	touch $(STAMP)

# Oracle generation end to end: procedural target -> phases I-III -> demo/out/result.glb.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m backend.eval.targets --out demo --targets ring
	HF_HUB_OFFLINE=1 $(PY) -m backend run demo/ring_job.json --out demo/out
	@echo "demo: demo/out/result.glb, demo/out/turntable.png, demo/out/metrics.json"

# Everything, slow tests included (what CI runs).
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

# The quick loop: skips tests marked slow.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

doctor: $(STAMP)
	$(PY) -m backend doctor

clean:
	rm -rf demo .pytest_cache
