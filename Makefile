# Two entry points, both idempotent on a fresh Debian machine:
#   make run   - virtualenv, install, create the SQLite store, run the gateway on loopback
#   make test  - test peers (Debian packages), test extras, the whole suite
#   make check-wheel - build sdist + wheel, install outside the tree, run it (CI, before test)
#   make lint  - ruff check, ruff format --check and mypy (strict, the [tool.mypy] files); CI runs it
#   make fuzz  - fuzz the SIP core for FUZZ_SECONDS (atheris when it installs), see docs/sip-core.md
VENV   ?= .venv
PY     := $(VENV)/bin/python
# `make run` installs the package the way operators do (a normal, not an
# editable, install) in its own virtualenv, reinstalled when a source changes,
# so that it runs only what a wheel ships; the test virtualenv stays editable.
RUN_VENV ?= .venv-run
PACKAGE_FILES := setup.py MANIFEST.in $(shell find purplegw -type f -not -name '*.pyc' -not -name '*.so')
# Empty: the defaults the package carries (the same text as etc/purplegw.toml).
CONFIG ?=
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG))
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 3600
FUZZ_ARGS ?=

.PHONY: run test test-deps bench clean fuzz attack check-wheel lint

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The test virtualenv runs the SIP core compiled, as a normal install does
# where a C compiler is found (setup.py, COMPILED): PURPLEGW_COMPILE=1 makes a
# failed compile an error here instead of a quiet pure-Python fallback.  The
# editable install puts the compiled modules next to their sources, so they are
# rebuilt whenever a source of the SIP core or front changes (tests/conftest.py refuses
# to run on stale ones).  The installs that only bring dependencies skip the
# compile: one compile per change, in .compiled.
COMPILED_SOURCES := $(wildcard purplegw/sip/*.py purplegw/actors/front/*.py)
$(VENV)/.installed $(VENV)/.installed-test $(VENV)/.installed-fuzz: export PURPLEGW_COMPILE = 0
$(VENV)/.compiled: export PURPLEGW_COMPILE = 1

$(VENV)/.installed: $(VENV)/bin/python setup.py
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.py
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.compiled: $(VENV)/.installed-test $(COMPILED_SOURCES)
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(RUN_VENV)/.installed: $(PACKAGE_FILES)
	test -x $(RUN_VENV)/bin/python || python3 -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/python -m pip install -q --upgrade pip
	$(RUN_VENV)/bin/python -m pip install -q .  # a source directory is always rebuilt
	touch $@

run: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/purplegw $(CONFIG_ARG) db init
	exec $(RUN_VENV)/bin/purplegw $(CONFIG_ARG) run

# The packaged defaults are the source; etc/purplegw.toml is the same text
# (tests/test_packaging.py checks it): `make etc/purplegw.toml` after an edit.
etc/purplegw.toml: purplegw/config/default.toml
	cp $< $@

check-wheel: test-deps
	sh scripts/check-wheel.sh

test-deps:
	sh scripts/install-test-peers.sh

test: test-deps $(VENV)/.compiled
	$(PY) -m pytest $(PYTEST_ARGS)

# The same three commands as .pre-commit-config.yaml; the settings are in pyproject.toml.
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

$(VENV)/.installed-fuzz: $(VENV)/.compiled setup.py
	$(PY) -m pip install -q -e '.[fuzz]' || echo "atheris unavailable: the seeded random engine fuzzes instead"
	touch $@

# make fuzz FUZZ_SECONDS=3600 FUZZ_ARGS="--seed 7 parser-stream"; crashes land in var/fuzz/crashes
fuzz: $(VENV)/.installed-fuzz
	$(PY) -m tests.kit.fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

# make attack ATTACK_SCALE=10: the hostile-peer tests (docs/reliability.md,
# "Hostile input") with every flood ATTACK_SCALE times its CI size
ATTACK_SCALE ?= 10
attack: test-deps $(VENV)/.compiled
	PURPLEGW_ATTACK_SCALE=$(ATTACK_SCALE) $(PY) -m pytest -p no:cacheprovider tests/hostile tests/protocols/test_irc_hostile.py

clean:
	rm -rf $(VENV) $(RUN_VENV) var build dist *.egg-info .pytest_cache purplegw_sipcore__mypyc.*.so
	find purplegw -name '*.so' -delete
