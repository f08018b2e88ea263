# captionrec — the two commands a newcomer needs:
#   make demo   # create .venv, install, build tiny offline models, run the whole pipeline on the bundled sample
#   make test   # create .venv if needed, install, run the test suite (what CI runs: .ci/run)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
MODELS ?= models/tiny

# System packages the tests and the demo need: command -> Debian package. `make system-deps` installs the
# missing ones with apt-get when it runs as root, and otherwise stops with the exact command to run.
SYSTEM_PACKAGES := java:openjdk-17-jre-headless espeak-ng:espeak-ng

.PHONY: install system-deps demo test test-all test-petastorm bench bench-recbole sample tiny-models lock clean-lakehouse clean

system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing system packages:$$missing"; \
	    echo "install them with: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	# the local CPU wheel first: an unpinned torch would pull GBs of CUDA packages
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[local,dev,delta-spark]"
	touch $@

install: system-deps $(STAMP)

tiny-models: install
	$(BIN)/captionrec tiny-models --out $(MODELS)

demo: install tiny-models
	$(BIN)/captionrec all
	@echo; echo "Tables under ./lakehouse (Delta), MLflow runs in ./mlflow.db: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

# The suite in the main environment, then the petastorm loader in its own pinned one (pyarrow <= 14).
# pytest exits 5 when a selection holds no test: that is not a failure of the suite.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests selected"; exit 0; fi; exit $$rc
	@if [ -z "$(PYTEST_ARGS)" ]; then bash .ci/petastorm.sh; fi

test-all: install
	$(MAKE) test PYTEST_ARGS='-m ""'

test-petastorm:
	bash .ci/petastorm.sh

bench: install
	for b in bench/bench_*.py; do [ "$$b" = bench/bench_recbole.py ] && continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

# RecBole's SASRec vs ours on MovieLens-100K (hours on a 2-core CPU; resumable; builds .venv-recbole on first use).
bench-recbole: install
	$(BIN)/python bench/bench_recbole.py $(BENCH_ARGS)

sample: install
	$(BIN)/captionrec sample --out data/sample

lock: install
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.tmp && mv constraints.tmp constraints.txt

clean-lakehouse:
	rm -rf lakehouse mlflow.db mlartifacts spark-warehouse

clean: clean-lakehouse
	rm -rf $(VENV) models
