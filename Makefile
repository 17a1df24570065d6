# The two README commands: `make demo` (main job) and `make test` (test suite).
# Both create the virtual environment on first use; dev/CI installs are pinned by constraints.txt
# and include the serving extras, so that their tests run (tests/test_serve*.py).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test install docs dist clean

$(STAMP): setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,serve,onnx,mips]'
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[docs]' build twine
	touch $(DOCS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tagnn-pyg demo

test: $(STAMP)
	$(PY) -m pytest -q

# The documentation site (Sphinx + MyST, API reference from the docstrings);
# warnings are errors.
docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# sdist + wheel in dist/, checked by twine; then the sdist's own test suite runs
# from the unpacked sdist (against the real data in ../shared/datasets).
dist: $(DOCS_STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist . > dist.log 2>&1 || (cat dist.log; exit 1)
	$(PY) -m twine check --strict dist/*
	$(PY) tools/check_sdist.py dist

clean:
	rm -rf $(VENV) build dist dist.log *.egg-info runs docs/_build
