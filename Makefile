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
