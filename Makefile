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
NOT_SLOW := $(if $(filter true,$(CI)),,and not slow)

# ROS 2 (rclpy community wheels, dev/CI only) lives in its own venv: its .pth re-executes every Python
# process of the venv it is installed in. It holds symgate too (the sim robot and the model builders).
ROS_VENV := .venv-ros
ROS_BIN := $(ROS_VENV)/bin
# DDS tests are hermetic (pipeline/serve/__init__.py): a private network namespace (only loopback, so
# no packet leaves the machine) and a private tmpfs on /dev/shm (Fast DDS's shared-memory transport).
ROS_TEST_ENV := ROS_DOMAIN_ID=$(or $(ROS_DOMAIN_ID),42)
ISOLATED := $(ROS_BIN)/python -m pipeline.serve
# The namespaces need `ip` (iproute2).
IPROUTE2 := @command -v ip >/dev/null || (apt-get update -qq && apt-get install -y -qq iproute2)

.PHONY: venv ros-venv demo test pytest ros-test ray-test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes (the stamp is older than it).
$(VENV)/.installed-$(ORT): pyproject.toml | $(BIN)/python
	@if [ "$(ORT)" = cpu ]; then other=onnxruntime-gpu; else other=onnxruntime; fi; \
	  $(BIN)/python -m pip uninstall --quiet --yes $$other 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[$(ORT),dev,ray]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV)/.installed-$(ORT)

$(ROS_VENV)/.installed: pyproject.toml ros_nodes/setup.py
	$(IPROUTE2)
	$(PYTHON) -m venv $(ROS_VENV)
	$(ROS_BIN)/python -m pip install --quiet --upgrade pip
	$(ROS_BIN)/python -m pip install --quiet -e '.[cpu,dev,ros]' -e ros_nodes
	touch $@

ros-venv: $(ROS_VENV)/.installed

demo: venv ros-venv
	$(BIN)/symgate demo --out $(DEMO_DIR)

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

test: lint typecheck pytest ros-test ray-test

# pytest exits 5 when it collected no test: a test run that tests nothing is a failure here.
pytest: venv ros-venv
	@$(BIN)/pytest -m "not ray $(NOT_SLOW)" $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

# The tests on a real Ray cluster (marked ray): Ray binds every interface, so they run in a private
# network namespace where loopback is the only one (the DDS tests' isolation, pipeline/serve/__init__.py).
ray-test: venv
	$(IPROUTE2)
	@$(BIN)/python -m pipeline.serve $(BIN)/pytest -m "ray $(NOT_SLOW)" $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no Ray tests: failing" >&2; fi; exit $$rc

# The ROS 2 tests: real rclpy and DDS, nodes in separate processes, inside a loopback-only namespace.
ros-test: ros-venv
	@$(ROS_TEST_ENV) $(ISOLATED) $(ROS_BIN)/pytest tests/ros_nodes $(PYTEST_MARKERS) $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no ROS tests: failing" >&2; fi; exit $$rc

# Every bench/bench_*.py writes bench/results/<name>-<date>-<host>.json, symgate beside its reference;
# bench/summary.py then merges the newest of each into bench/results/<date>-<host>.json and .md.
bench: venv ros-venv
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
	@$(BIN)/python bench/summary.py

clean:
	rm -rf $(VENV) $(ROS_VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
