# Two commands set everything up on a fresh Debian machine:
#   make demo   -> bootstrap (.venv, system packages when root) then `symclone demo`
#   make test   -> bootstrap then the test suite
PY := .venv/bin/python

.PHONY: demo test setup bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m symclone demo

test: setup
	@$(PY) -m pytest -q tests

bench: setup
	@$(PY) -m benchmarks --quick

clean:
	rm -rf .venv runs .cache
