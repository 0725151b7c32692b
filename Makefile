# prunediff: `make quickstart` (laptop run on Fashion-MNIST) and `make test`.
# Both create and install .venv on first use; later calls reinstall only when
# setup.cfg or pyproject.toml changed (the stamp file below).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= experiments/quickstart.yaml
ARGS ?=
PYTEST_ARGS ?=
FMNIST_SYS := /usr/share/datasets/fashion-mnist
FMNIST_LOCAL := data/fashion-mnist
FMNIST_URL := http://fashion-mnist.s3-website.eu-central-1.amazonaws.com
FMNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz

.PHONY: venv data quickstart test test-fast test-cluster bench clean

venv: $(STAMP)

# editable_mode=compat puts the checkout itself on sys.path, so packages added
# after the install (new subpackages of orchestrator/, models/, ...) import too.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "python3 -m venv failed; installing python3-venv with apt"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PY) -m venv $(VENV); }
	$(BIN)/python -m pip install -q -e '.[dev,cpu]' --config-settings editable_mode=compat
	@touch $@

# Fashion-MNIST: the Debian package where apt works, else the official IDX files.
data:
	@if [ -f $(FMNIST_SYS)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: $(FMNIST_SYS)"; \
	elif command -v apt-get >/dev/null 2>&1 && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist \
	     || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }; } >/dev/null 2>&1 \
	     && [ -f $(FMNIST_SYS)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: installed the Debian package into $(FMNIST_SYS)"; \
	elif [ -f $(FMNIST_LOCAL)/t10k-labels-idx1-ubyte.gz ]; then \
	  echo "Fashion-MNIST: $(FMNIST_LOCAL)"; \
	elif mkdir -p $(FMNIST_LOCAL) && $(PY) -c 'import sys, urllib.request as u; \
	  [u.urlretrieve(sys.argv[1] + "/" + f, sys.argv[2] + "/" + f) for f in sys.argv[3:]]' \
	  $(FMNIST_URL) $(FMNIST_LOCAL) $(FMNIST_FILES) 2>/dev/null; then \
	  echo "Fashion-MNIST: downloaded the official IDX files into $(FMNIST_LOCAL)"; \
	else \
	  rm -rf $(FMNIST_LOCAL); \
	  echo "error: Fashion-MNIST not found. Install it with 'apt-get install dataset-fashion-mnist'" \
	       "(Debian/Ubuntu) or put the four IDX .gz files from $(FMNIST_URL) into $(FMNIST_LOCAL)/" >&2; \
	  exit 1; \
	fi

quickstart: venv data
	@dir=$(FMNIST_SYS); [ -f $$dir/train-images-idx3-ubyte.gz ] || dir=$(CURDIR)/$(FMNIST_LOCAL); \
	$(BIN)/python -m orchestrator.run $(CONFIG) --set "data.datasets[0].path=$$dir" $(ARGS)

# Test tiers (tests/tiers.py): test = unit + e2e + ray; test-fast = unit; test-cluster =
# multi-node and autoscaling. pytest's exit code 5 ("no tests collected") is a failure here.
PYTEST = rc=0; $(BIN)/python -m pytest --durations=20
PYTEST_RC = || rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: venv data
	@$(PYTEST) $(PYTEST_ARGS) $(PYTEST_RC)

test-fast: venv data
	@$(PYTEST) -m unit $(PYTEST_ARGS) $(PYTEST_RC)

test-cluster: venv data
	@$(PYTEST) -m cluster $(PYTEST_ARGS) $(PYTEST_RC)

bench: venv data
	@set -e; for f in benchmarks/bench_*.py; do m=$$(basename $$f .py); echo "== benchmarks.$$m"; $(BIN)/python -m benchmarks.$$m; done

clean:
	rm -rf outputs .pytest_cache
