# Two entry points: `make train` (set up, then the main job) and `make test` (set up, then the suite).
# Everything installs into .venv. torch is installed first, on its own: here `torch==2.13.0` is the local
# CPU wheel; any other spec, or letting a dependency pull torch, downloads several GB of CUDA packages.
# DeepSpeed (the deepspeed extra, which the tests use) comes next: PyPI has its source only, built here without its
# compiled ops and against the torch already installed (a build in an isolated environment would fetch CUDA torch).
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
DEEPSPEED_SPEC ?= deepspeed>=0.19
CONFIG ?= configs/emotion.yaml
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: setup train test test-fast test-fresh test-floors lint format docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation "$(DEEPSPEED_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,deepspeed]"
	touch $@

train: setup
	$(BIN)/ptrain train $(CONFIG)

lint: setup
	$(BIN)/ruff check ptrain tests
	$(BIN)/ruff format --check ptrain tests

format: setup
	$(BIN)/ruff check --fix ptrain tests
	$(BIN)/ruff format ptrain tests

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15  # two workers (the tests wait on subprocesses as much as they compute); a module's tests on one worker, so its module fixtures run once

docs: setup  # docs/config.md from the schema's field descriptions; tests/test_config_reference.py fails when it is stale
	$(BIN)/python -m ptrain.tasks.config_reference docs/config.md

test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not multiprocess"  # the edit-test loop: under a minute on 2 cores

test-fresh: setup
	PTRAIN_TEST_FORK=0 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m end_to_end  # each CLI call a fresh interpreter, as a user's: what the fork server could hide (import order, exit)

# The suite with every dependency at its floor (.ci/floors.txt pins pyproject.toml's floors), in its own venv: proves
# the floors. Not part of .ci/run. Same order as setup: torch, then DeepSpeed without its ops, then ptrain.
FLOORS_VENV ?= .venv-floors
FLOORS := .ci/floors.txt

$(FLOORS_VENV)/.installed: pyproject.toml $(FLOORS)
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c $(FLOORS) "$(TORCH_SPEC)"
	DS_BUILD_OPS=0 $(FLOORS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation -c $(FLOORS) deepspeed
	$(FLOORS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c $(FLOORS) -e ".[dev,deepspeed]"
	touch $@

test-floors: $(FLOORS_VENV)/.installed
	$(FLOORS_VENV)/bin/python -m pytest -q -n 2 --dist loadfile -x

bench: setup
	$(BIN)/ptrain bench $(CONFIG) --steps 100 --compare-hf

clean:
	rm -rf $(VENV) $(FLOORS_VENV) .pytest_cache
