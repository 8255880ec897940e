# The two commands a new user needs (see README.md):
#   make demo   set up .venv and run the live ultrasound demo (viewer at http://127.0.0.1:8080/)
#   make test   set up .venv with the test extras (and Debian packages the tests need) and run the suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?= 0

.PHONY: demo test test-fast setup setup-test lint gpu-check clean

$(VENV)/.installed: pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,train]'
	@touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.test-installed
	@./.ci/debian-deps

demo: $(VENV)/.installed
	$(VENV)/bin/medstream run configs/ultrasound_seg.yaml --report out/ultrasound_seg_report.json \
		$(if $(filter-out 0,$(DURATION)),--duration $(DURATION))

lint: $(VENV)/.test-installed
	$(PY) -m ruff check stream engines tools tests
	$(PY) -m mypy  # stream/ engines/ tools/, configured in pyproject.toml [tool.mypy]

# GPU hosts: every GPU path this host can run, ran / skipped (why) / failed, in one table
# (install the gpu extra first for TensorRT and pycuda: .venv/bin/pip install -e '.[gpu]')
gpu-check: $(VENV)/.installed
	$(PY) -m tools.gpu_check --json out/gpu_check.json

test: setup-test lint
	$(PY) -m pytest -q

# the suite without process-spawning and long tests (marked slow): under a minute on 2 cores (about 40 s); no lint
test-fast: setup-test
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) out .pytest_cache
