# Two commands do all the set-up on a fresh machine:
#   make test   creates (or reuses) .venv, installs the package with its test extras, runs the suite
#   make demo   the main job on a machine with no network (see README.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# pytest-xdist workers: most tests are single-threaded compiles, so two workers use both
# cores of a 2-core machine (0 runs the suite in one process). Each test file goes to one
# worker (loadfile), so a file's shared fixtures (a trained run, a reference run) are
# made once.
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.installed

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP)
	$(PY) launch.py --config=configs/shapes.py --workdir=workdirs/demo --mode=demo

clean:
	rm -rf $(VENV) build *.egg-info
