# Two commands do all the set-up on a fresh machine:
#   make test   creates (or reuses) .venv, installs the package with its test extras, runs the suite
#   make demo   the main job on a machine with no network (see README.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) -m jmvae_jax.demo

clean:
	rm -rf $(VENV) build *.egg-info
