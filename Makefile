# Two commands from a fresh clone: `make run` and `make test`. Both create .venv on first use
# and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help run test lint typecheck pytest bench agent sandbox clean

# `make` alone says what there is to run (it made .venv/bin/python and stopped, saying nothing).
.DEFAULT_GOAL := help
help:
	@echo 'make run        start the server on http://127.0.0.1:8000 with the embedded LiveKit sandbox'
	@echo '                (no credentials, no real phone called; PORT=8001 SANDBOX_PORT=0 make run beside another)'
	@echo 'make test       ruff, mypy (strict) and the whole pytest suite, as CI runs it (about 5 minutes on 2 cores)'
	@echo 'make lint       ruff check and ruff format --check'
	@echo 'make typecheck  mypy'
	@echo 'make pytest     the pytest suite alone, on PYTEST_WORKERS (6) workers'
	@echo 'make agent      the agent worker for a real LiveKit project (python -m agent start)'
	@echo 'make sandbox    the LiveKit sandbox alone, on port 7880'
	@echo 'make bench      the benchmarks (bench/RESULTS.md)'
	@echo 'make clean      remove .venv and the tools'"'"' caches'
	@echo 'All but clean make .venv first if needed (PYTHON=python3.12 to choose its Python). Settings: .env.example, README.md.'

# A venv whose creation failed is removed: Debian's python3 without python3-venv makes
# .venv/bin/python before it fails on ensurepip, and that half-made .venv (no pip) failed
# every later `make run`, python3-venv installed or not, until a `make clean`.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(VENV) runs Python $$($(BIN)/python -c 'import platform; print(platform.python_version())'), and this project needs 3.11 or later: run make clean, then this again with PYTHON=python3.11 (or newer)" >&2; exit 1; }
	@$(BIN)/python -m pip --version > /dev/null 2>&1 || { echo "$(VENV) has no pip (made by a python without its venv module, before the apt-get install python3-venv): run make clean, then this again" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python server.py

# mypy beside pytest, not before it: the suite keeps about 1.5 of the two cores busy (its
# tests wait on sockets and subprocesses), and mypy's first run on a fresh clone (no
# .mypy_cache) took 41 s of one core before the first test started. Either failing fails
# the target (make -j waits for the other, then stops non-zero). Here mypy runs at the lowest
# priority (`nice -n 19`): its ~36 s of CPU goes in the time the suite leaves a core idle, not
# in turns with the six workers collecting and the tests' servers (it still ends long before
# them). `make typecheck` alone runs it as before.
test: $(STAMP) lint
	@$(MAKE) --no-print-directory -j2 typecheck pytest MYPY_PREFIX='nice -n 19'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Not in the environment of the commands (make exports a variable given on its command line):
# the suite's own `make` runs would run mypy under nice too.
MYPY_PREFIX ?=
unexport MYPY_PREFIX
typecheck: $(STAMP)
	$(strip $(MYPY_PREFIX) $(BIN)/mypy)

# Six workers on two cores (each starts its own PostgreSQL cluster when it needs one): most
# tests wait on sockets, subprocesses and sleeps. With one worker per core the suite kept 0.9
# of a core busy (377 s, when it was smaller); with 3 workers the 4,050 tests took 366 s and
# kept 1.2 cores busy, with 4 they took 305 s (1.4 cores). At 4,320 tests, a third of whose
# time was spent waiting (161 tests: 346 s of waiting for 18 s of CPU), measured one after
# the other on a quiet machine: 4 workers 357 s, 6 workers 315 s, 8 workers 342 s, every
# timed test passing. The 20 slowest tests are listed at the end (the suite is meant to stay
# under 5 minutes). tests/conftest.py spreads the slow tests (reliability/) through every
# worker's run; at 4,360 tests, one after the other on a quiet machine: 6 workers 322 s (344 s
# with them in one worker's run, as before), 5 workers 351 s, 8 workers 344 s.
# `$(BIN)/pytest path/to/test.py` alone runs in one process.
#
# With PYTHONDONTWRITEBYTECODE set (as on our CI machines), every Python the suite starts
# (each worker, and the hundreds of servers, agents and writers the tests run) compiled the
# project's 102 modules again (0.4 s of CPU each time) and each worker rewrote the asserts of
# every test module (8 s of its 15 s collection): the suite writes its bytecode
# (__pycache__/, ignored by git), 18% less CPU over the whole run.
PYTEST_WORKERS ?= 6
pytest: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal --durations=20

bench: $(STAMP)
	$(BIN)/python -m bench

agent: $(STAMP)
	$(BIN)/python -m agent start

sandbox: $(STAMP)
	$(BIN)/python -m sandbox

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
