# captionrec — the two commands a newcomer needs:
#   make demo   # create .venv, install, build tiny offline models, run the whole pipeline on the bundled sample:
#               # ingest -> caption -> embed -> experiment -> recommend -> report, then both notebooks, and ends
#               # with what recommend serves (`captionrec served`: both tables and the registered model)
#   make test   # create .venv if needed, install, run the test suite, then the pipeline under the Databricks
#               # runtime's libraries (what CI runs: .ci/run)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
MODELS ?= models/tiny

# System packages the tests and the demo need: command -> Debian package. `make system-deps` installs the
# missing ones with apt-get when it runs as root, and otherwise stops with the exact command to run.
SYSTEM_PACKAGES := java:openjdk-17-jre-headless espeak-ng:espeak-ng chromium:chromium

.PHONY: install system-deps demo test test-fast lint format summary-shape pytest test-all test-petastorm test-runtime bench bench-recbole sample tiny-models lock clean-lakehouse clean
.PHONY: wheel pack-env test-delta-spark test-cluster

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
	mkdir -p reports/notebooks && cp notebooks/captions.ipynb notebooks/experiments.ipynb reports/notebooks/
	$(BIN)/jupyter-execute --inplace --timeout=900 reports/notebooks/captions.ipynb reports/notebooks/experiments.ipynb
	@echo; echo "Results (the newest report is reports/latest/):"
	@echo "  table:     reports/latest/report.md, reports/latest/report.csv"
	@echo "  report:    reports/latest/report.html (plots inlined; PNGs in reports/latest/plots/)"
	@echo "  gallery:   reports/latest/gallery.html"
	@echo "  notebooks: reports/notebooks/captions.ipynb, reports/notebooks/experiments.ipynb (executed)"
	@echo "  config:    reports/configs/all-<UTC time>.yaml (the effective config; --show-config prints it)"
	@echo "  tables under ./lakehouse (Delta); MLflow runs: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"
	@echo "  served:    the registered model over HTTP: docs/recommend.md (mlflow models serve + curl)"
	@echo; echo "What recommend serves (captionrec served):"
	$(BIN)/captionrec served --log-level WARNING

# What CI runs (.ci/run): the formatter check and the linter, the suite in the main environment (the stage-by-stage
# spark-submit run on a real standalone cluster included), then the pipeline under the Databricks runtime's libraries
# (test-runtime).
test: lint pytest test-runtime

# ruff (rules and why: pyproject.toml). `make format` rewrites the files; `make lint` only checks.
LINT_PATHS := lib tests bench scripts jobs .ci setup.py
lint: install
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)

format: install
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

# The suite alone (a subset: make pytest PYTEST_ARGS='tests/tables/test_tables.py -x'). pytest exits 5 when a selection
# holds no test: not a failure.
pytest: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests selected"; exit 0; fi; exit $$rc

# The pure tests alone (no Spark, no slow or GPU tests): seconds, for the edit-test loop.
test-fast: install
	$(BIN)/python -m pytest -q -m "not spark and not slow and not gpu" $(PYTEST_ARGS)

# Everything: slow tests too, then the petastorm loader in its own pinned environment (pyarrow <= 14).
test-all: install
	$(MAKE) pytest PYTEST_ARGS='-m ""'
	bash .ci/runtime.sh
	bash .ci/petastorm.sh

test-petastorm:
	bash .ci/petastorm.sh

# The Databricks runtime's library set (constraints/dbr-17.3-ml.txt, Python 3.12) in ~/.cache/captionrec/venv-runtime, the wheel's
# requirements on top, then the whole pipeline on the sample under it and a summary-shape check against .venv.
test-runtime: install
	bash .ci/runtime.sh

# Rewrite .ci/summary_shape.json (the stage summaries' shape test-runtime compares against) from a .venv run of the
# same pipeline: after a summary gained or lost a key on purpose.
summary-shape: install
	bash .ci/summary_shape.sh

# The six stages through spark-submit on a real standalone cluster on 127.0.0.1 (also in `make test`), and the
# caption stage on local-cluster[2,1,1024] with fake GPUs (15-30 min on 2 cores).
test-cluster: install
	$(MAKE) pytest PYTEST_ARGS='tests/deploy/test_cluster_standalone.py tests/pipeline/test_caption_localcluster.py -m "localcluster and not gpu" -k "not packed_env"'

bench: install
	for b in bench/bench_*.py; do [ "$$b" = bench/bench_recbole.py ] && continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

# RecBole's SASRec vs ours on MovieLens-100K (hours on a 2-core CPU; resumable; builds .venv-recbole on first use).
bench-recbole: install
	$(BIN)/python bench/bench_recbole.py $(BENCH_ARGS)

sample: install
	$(BIN)/captionrec sample --out data/sample

lock: install
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.tmp && mv constraints.tmp constraints.txt

# -- cluster launch (docs/deploy.md "Run with spark-submit", "Run on Databricks") ------------------------------------
VERSION := $(shell sed -n 's/^ *version="\([^"]*\)".*/\1/p' setup.py)
WHEEL := dist/captionrec-$(VERSION)-py3-none-any.whl
ENV_PACK := dist/captionrec-env.tar.gz
PACK_VENV := build/pack-venv
# The torch the executors get. PyPI's Linux torch 2.14.1 is the CUDA 13.0 build (torch.version.cuda "13.0"; its CUDA
# libraries come as nvidia-* wheels, ~5.5 GB installed; drivers R580+); another CUDA build, e.g. for older drivers:
# PACK_PIP_ARGS='--index-url https://download.pytorch.org/whl/cu126'. After the install, PACK_PROFILE=gpu (default)
# refuses a CPU-only torch (scripts/check_pack_env.py); PACK_PROFILE=cpu packs any torch, for CPU-only executors.
PACK_TORCH ?= torch==2.14.1
PACK_PIP_ARGS ?=
PACK_PROFILE ?= gpu
PACK_CONSTRAINTS := build/pack-constraints.txt

# The wheel spark-submit clusters and Databricks wheel tasks install (config files inside: captionrec/_conf).
wheel: install
	rm -rf build/lib build/bdist.* $(WHEEL)
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .
	@echo "built $(WHEEL)"

# The packed Python environment executors unpack (spark-submit --archives $(ENV_PACK)#env, conf/spark-gpu.conf):
# a fresh venv with the wheel (not editable) and the pinned dependencies, packed with venv-pack. Executors need
# the same base Python at the same path ($(PY): $(shell command -v $(PY))); otherwise use the image route.
pack-env: wheel
	rm -rf $(PACK_VENV) && $(PY) -m venv $(PACK_VENV)
	$(PACK_VENV)/bin/pip install -q --upgrade pip wheel
	# constraints.txt pins the local CPU torch (2.13.0): the pack takes PACK_TORCH instead, every other pin as it is
	{ grep -v '^torch==' constraints.txt; echo '$(PACK_TORCH)'; } > $(PACK_CONSTRAINTS)
	$(PACK_VENV)/bin/pip install -q $(PACK_PIP_ARGS) -c $(PACK_CONSTRAINTS) '$(PACK_TORCH)'
	$(PACK_VENV)/bin/pip install -q -c $(PACK_CONSTRAINTS) "$(WHEEL)[local]"
	$(BIN)/python scripts/check_pack_env.py --python $(PACK_VENV)/bin/python --profile $(PACK_PROFILE)
	$(BIN)/venv-pack -q -p $(PACK_VENV) -o $(ENV_PACK) --force
	@ls -lh $(ENV_PACK)

# The table contract tests against Delta itself (needs Maven for the jars, or them in ~/.ivy2; not here).
DELTA_PACKAGE = $(shell awk '$$1 == "spark.jars.packages" {print $$2}' conf/spark-gpu.conf)
test-delta-spark: install
	PYSPARK_SUBMIT_ARGS="--packages $(DELTA_PACKAGE) --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
	  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog pyspark-shell" \
	  $(BIN)/python -m pytest tests/tables/test_tables.py $(PYTEST_ARGS)

clean-lakehouse:
	rm -rf lakehouse mlflow.db mlartifacts spark-warehouse reports

clean: clean-lakehouse
	rm -rf $(VENV) models
