# symgate: `make demo` runs the pipeline on its embedded defaults, `make test` checks everything.
# Both create or update the virtual environment they need, idempotently.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The onnxruntime flavour: cpu (default) or gpu. Never both in one venv (same package folder).
ORT ?= cpu
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=
# Tests marked slow run in CI (which sets CI=true) and are skipped locally.
PYTEST_MARKERS := $(if $(filter true,$(CI)),,-m "not slow")

.PHONY: venv demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes (the stamp is older than it).
$(VENV)/.installed-$(ORT): pyproject.toml | $(BIN)/python
	@if [ "$(ORT)" = cpu ]; then other=onnxruntime-gpu; else other=onnxruntime; fi; \
	  $(BIN)/python -m pip uninstall --quiet --yes $$other 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[$(ORT),dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV)/.installed-$(ORT)

demo: venv
	$(BIN)/symgate demo --out $(DEMO_DIR)

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

# pytest exits 5 when it collected no test: a test run that tests nothing is a failure here.
test: lint typecheck
	@$(BIN)/pytest $(PYTEST_MARKERS) $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

# Every bench/bench_*.py writes bench/results/<name>-<date>-<host>.json, symgate beside its reference.
bench: venv
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
