# Two entry points, both idempotent on a fresh Debian machine:
#   make run   - virtualenv, install, create the SQLite store, run the gateway on loopback
#   make test  - test peers (Debian packages), test extras, the whole suite
#   make fuzz  - fuzz the SIP core for FUZZ_SECONDS (atheris when it installs), see docs/sip-core.md
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= etc/purplegw.toml
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 3600
FUZZ_ARGS ?=

.PHONY: run test test-deps bench clean fuzz attack

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.py
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.py
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/purplegw --config $(CONFIG) db init
	exec $(VENV)/bin/purplegw --config $(CONFIG) run

test-deps:
	sh scripts/install-test-peers.sh

test: test-deps $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

$(VENV)/.installed-fuzz: $(VENV)/.installed-test setup.py
	$(PY) -m pip install -q -e '.[fuzz]' || echo "atheris unavailable: the seeded random engine fuzzes instead"
	touch $@

# make fuzz FUZZ_SECONDS=3600 FUZZ_ARGS="--seed 7 parser-stream"; crashes land in var/fuzz/crashes
fuzz: $(VENV)/.installed-fuzz
	$(PY) -m tests.kit.fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

# make attack ATTACK_SCALE=10: the hostile-peer tests (docs/reliability.md,
# "Hostile input") with every flood ATTACK_SCALE times its CI size
ATTACK_SCALE ?= 10
attack: test-deps $(VENV)/.installed-test
	PURPLEGW_ATTACK_SCALE=$(ATTACK_SCALE) $(PY) -m pytest -p no:cacheprovider tests/hostile tests/protocols/test_irc_hostile.py

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
