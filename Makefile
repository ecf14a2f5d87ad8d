# Adaptive Inference: `make test` and `make course` work on a fresh machine (they install first).
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PROFILE ?= quick
STAMP   := $(VENV)/.installed

.PHONY: install test unit course bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

# The whole suite: library unit tests and every notebook executed end to end (quick profile).
test: install
	$(PY) -m pytest

# Library tests only (seconds).
unit: install
	$(PY) -m pytest -m "not notebook"

# Execute every notebook in order into build/: notebooks, HTML, metrics JSON, REPORT.md.
course: install
	$(PY) -m dyninf.course --profile $(PROFILE) --out build

# Measured speed-up of skipped execution over the plain network (random decisions and every trained
# decider in runs/$(PROFILE)/), beside the ideal one from MACs: a table, build/bench/*.json and .png.
bench: install
	$(PY) benchmarks/skipping.py --profile $(PROFILE)

clean:
	rm -rf build
