# data2dialogue: `make demo` runs the whole lifecycle, `make test` the test suite.
# Every target installs what it needs into .venv first (pinned by constraints.txt).
VENV   ?= .venv
PY     := $(VENV)/bin/python
D2D    := $(VENV)/bin/d2d
STAMP  := $(VENV)/.installed-stamp
RUN    ?= runs/demo
PORT   ?= 8000
export RAY_AUTH_MODE ?= disabled
export HF_HUB_OFFLINE := 1

.PHONY: setup test demo bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU torch wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest

demo: setup
	$(D2D) run --config demo --run-dir $(RUN)
	# Serve the last chat model of the recipe's chain (RUN/.d2d/serve_model, written by each chat stage).
	$(D2D) serve --model "$$(cat $(RUN)/.d2d/serve_model)" --run-dir $(RUN) --port $(PORT)

bench: setup
	$(D2D) bench all --run-dir bench

lint: setup
	$(VENV)/bin/ruff check cluster pipeline serving guardrails tests

clean:
	rm -rf $(VENV) runs bench .pytest_cache
