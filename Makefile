# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-oracle test test-fast doctor clean

$(STAMP): requirements/backend.txt requirements/blender.txt requirements/test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/test.txt
	touch $(STAMP)

# One generate job through the Blender extension (headless bpy): real models when present,
# else the tiny ones -> demo/out.blend, demo/result.glb, demo/turntable.png.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tools/demo.py

# The backend alone with the analytic oracle: reconstructs a known ring, with metrics.
demo-oracle: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m backend.eval.targets --out demo/oracle --targets ring
	HF_HUB_OFFLINE=1 $(PY) -m backend run demo/oracle/ring_job.json --out demo/oracle/out
	@echo "demo-oracle: demo/oracle/out/result.glb, turntable.png, metrics.json"

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
