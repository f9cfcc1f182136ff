# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
# On the project's machines this takes a CPU wheel from local disk; override for CUDA, e.g. TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.steer-installed

.PHONY: install demo test test-fast test-wheel bench docs notebooks clean

# The distribution was named `steer` before it became `steer-neurons` (the import name is the same): an
# environment made then loses the old one first.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip uninstall --quiet --yes steer 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/steer demo --out demo_out

# The whole suite on the checkout, after the unit tests on the wheel a user would install (test-wheel):
# both always run, and `make test` fails when either does.
test: $(STAMP)
	status=0; PY=$(BIN)/python bash .ci/test-wheel || status=$$?; \
	$(BIN)/python -m pytest -q -ra || status=$$?; exit $$status

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

# A wheel built from the checkout, installed into a fresh venv, passes the non-integration tests (.ci/test-wheel).
test-wheel: $(STAMP)
	PY=$(BIN)/python bash .ci/test-wheel

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

# The README's tables of figures, regenerated from their result files under docs/results/ (each names its command
# and commit); `python benchmarks/readme_tables.py --check` only checks, and so does a test.
docs: $(STAMP)
	$(BIN)/python benchmarks/readme_tables.py

# Re-execute the notebooks at their default size on the embedded model: each notebooks/NN_*.py (the source)
# updates its paired .ipynb, which is then run top to bottom in a fresh kernel and saved with its outputs.
# Their files go to a temporary folder removed afterwards. On a busy CPU, OMP_NUM_THREADS=1 can be much faster.
NB_STAMP := $(VENV)/.steer-notebooks-installed
NOTEBOOK_SOURCES := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))

$(NB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks]"
	touch $(NB_STAMP)

notebooks: $(NB_STAMP)
	$(BIN)/jupytext --to ipynb --update $(NOTEBOOK_SOURCES)
	out=$$(mktemp -d) && STEER_NB_OUT=$$out $(BIN)/jupyter-execute --inplace --timeout=-1 \
		$(NOTEBOOK_SOURCES:.py=.ipynb); status=$$?; rm -rf "$$out"; exit $$status

clean:
	rm -rf $(VENV) demo_out .pytest_cache
