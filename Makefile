# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
# bpy 4.5's wheels are cp311 only: the venv needs Python 3.11 (make PYTHON=/path/to/python3.11).
PYTHON ?= $(shell for p in python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

NODE_STAMP := tools/gltf/node_modules/.installed
# The newest bpy (cp313) for the add-on tests on the newest Blender beside 4.5; skipped, saying
# so, where no Python 3.13 is found (PATH, or pyenv's versions).
NEWEST_PYTHON ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do $$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null && { echo $$p; break; }; done)
BPY_VENV := .venv-bpy
BPY_STAMP := $(BPY_VENV)/.installed

.PHONY: demo demo-oracle test test-fast check-install doctor clean

$(STAMP): $(addprefix requirements/,test.txt backend-common.txt blender.txt cluster.txt installer.txt)
	@test -x $(PY) || { test -n "$(PYTHON)" && $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; } \
	  || { echo "error: Python 3.11 is needed (bpy 4.5 wheels are cp311): install python3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/test.txt
	touch $(STAMP)

$(BPY_STAMP): requirements/blender-newest.txt
	@if [ -n "$(NEWEST_PYTHON)" ]; then \
	  { test -x $(BPY_VENV)/bin/python || $(NEWEST_PYTHON) -m venv $(BPY_VENV); } && \
	  $(BPY_VENV)/bin/python -m pip install --quiet -r requirements/blender-newest.txt && touch $(BPY_STAMP); \
	else echo "Python 3.13 not found: the add-on tests on the newest bpy will be skipped"; fi

# The Khronos glTF validator for the export tests (npm; without npm those tests skip, saying so).
$(NODE_STAMP): tools/gltf/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tools/gltf --silent && touch $(NODE_STAMP); \
	else echo "npm not found: the glTF validator tests will be skipped"; fi

# One generate job through the Blender extension (headless bpy): real models when present,
# else the tiny ones -> demo/out.blend, demo/result.glb, demo/turntable.png.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tools/demo.py

# The backend alone with the analytic oracle: reconstructs a known ring, with metrics.
demo-oracle: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m backend.eval.targets --out demo/oracle --targets ring
	HF_HUB_OFFLINE=1 $(PY) -m backend run demo/oracle/ring_job.json --out demo/oracle/out
	@echo "demo-oracle: demo/oracle/out/result.glb, turntable.png, metrics.json"

# Everything, slow tests included (what CI runs): two lanes (tests/conftest.py), the
# end-to-end oracle runs on one worker and every other test on the other; the slowest listed.
test: $(STAMP) $(NODE_STAMP) $(BPY_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --durations=25 tests

# The quick loop: skips tests marked slow.
test-fast: $(STAMP) $(NODE_STAMP) $(BPY_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

# Resolves requirements/ from PyPI alone for every platform and Python the backend installs on,
# and for make test's venvs, one line per target (needs the network: not part of make test).
# Run it before changing a pin.
check-install: $(STAMP)
	$(PY) tools/check_install.py

doctor: $(STAMP)
	$(PY) -m backend doctor

clean:
	rm -rf demo .pytest_cache
