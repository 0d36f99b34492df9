# Development entry points. `make run` serves the API with demo data on http://127.0.0.1:8080/;
# `make test` runs the suite. Both find or start a MariaDB through devtools/mariadb.py.
PYTHON ?= python3
VENV := .venv

.PHONY: venv run test bench

venv: $(VENV)/.installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The stamp makes the (slow) install run again only when the dependencies may have changed.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

run: venv
	$(VENV)/bin/python -m devtools.run

test: venv
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

.PHONY: settings-docs version image

# Rewrites the README's configuration table and config/cm-api.env.example from the declarations
# in service/settings.py (tests/test_settings.py fails while they differ).
settings-docs: venv
	$(VENV)/bin/python -m tests.settings_docs

# pyproject.toml's version: the one source of the package's version and the image's label and tag.
VERSION = $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE ?= cm-api

version:
	@echo $(VERSION)

# The container image, labelled and tagged with that version; IMAGE=registry.example.com/ops/cm-api
# names it for a registry.
image:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .
