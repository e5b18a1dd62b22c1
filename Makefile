# ppml-image developer entry points. Everything installs what it needs:
# a virtual environment in .venv, a Docker engine for the image tests,
# SoftHSM2 (a PKCS#11 token in software) with OpenSC's pkcs11-tool for the
# HSM signing tests, and a container registry on 127.0.0.1:5000 (Debian's
# docker-registry; PPML_IMAGE_REGISTRY_PORT for another port) for push and
# verify-by-digest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv test test-fast test-full test-slow demo bench lint wheel docker softhsm registry clean

help:
	@echo "make demo       run the whole chain on this machine (key, base image, sign)"
	@echo "make test       the test suite (real Docker engine, slim image)"
	@echo "make test-full  the whole suite including the full ML image (slow)"
	@echo "make bench      measure MRENCLAVE and trusted-file hashing speed"
	@echo "                (BENCH_ENTRIES=N: trusted entries of the big-manifest run)"
	@echo "make lint       ruff and mypy"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

docker:
	bash scripts/ensure-docker.sh

softhsm:
	bash scripts/ensure-softhsm.sh

# After docker: the engine must be up to say whether it accepts the registry.
registry: docker
	bash scripts/ensure-registry.sh >/dev/null

# Tests that need no engine run in parallel, one pytest-xdist worker per core
# (PARALLEL= for one process). The engine tests share images built once per
# session and time real signals and races, so they run in one process, after.
PARALLEL ?= -n auto

# The default suite: everything but the full ML image. Exit 5 is pytest's
# "nothing selected" (PYTEST_ARGS naming only tests of the other half).
test: $(STAMP) docker softhsm registry
	$(BIN)/python -m pytest -m "not slow and not docker" $(PARALLEL) --durations=25 \
		$(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m "not slow and docker" --durations=25 $(PYTEST_ARGS) \
		|| [ $$? -eq 5 ]

# Only what needs no engine: the signing core.
test-fast: $(STAMP) softhsm
	$(BIN)/python -m pytest -m "not slow and not docker" $(PARALLEL) $(PYTEST_ARGS)

# Only the slow tests (the full image with Spark and the JDK).
test-slow: $(STAMP) docker
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-full: $(STAMP) docker softhsm registry
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP) docker registry
	bash scripts/demo.sh

bench: $(STAMP) docker softhsm registry
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_images.py
	$(BIN)/python scripts/bench_commands.py
	$(BIN)/python scripts/bench_entries.py --entries $${BENCH_ENTRIES:-1000000}

lint: $(STAMP)
	$(BIN)/ruff check ppml_image tests scripts
	$(BIN)/mypy

wheel: $(STAMP)
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache
