# The two commands of the README:
#   make run    set up and run the app on the zero-setup default (SQLite, embedded Redis, a real
#               Celery worker, gunicorn on 127.0.0.1:8000)
#   make test   set up and run the whole test suite (brings up Redis and PostgreSQL if missing)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install install-dev run test lint

$(VENV)/.installed-app: requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-app requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed-app
install-dev: $(VENV)/.installed-dev

run: install
	bash scripts/run.sh

test: install-dev
	bash scripts/test.sh $(ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	SECRET_KEY=lint $(PY) -m mypy
