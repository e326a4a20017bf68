# Everything runs from the project's own virtual environment, created on demand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CI also checks the Kubernetes manifests against the API schemas (the k8s extra, ~100 MB).
comma := ,
EXTRAS := test$(if $(CI),$(comma)k8s)
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# Wait for a package manager that another process holds instead of failing on its lock.
APT_WAIT := -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3

.PHONY: install lint test test-fast demo bench envoy-configs image compose-up redis-server nginx fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	# xds-protos ships its own copy of OpenTelemetry's common_pb2.py; whichever of the
	# two wheels pip installs last wins. The exporter needs opentelemetry-proto's.
	$(PY) -m pip install --quiet --force-reinstall --no-deps "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check ext_authz tests bench
	$(VENV)/bin/ruff format --check ext_authz tests bench
	$(VENV)/bin/mypy

test: lint redis-server nginx
	$(PY) -m pytest

# The key-cache tests run against a real Redis; install Debian's server when missing.
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get $(APT_WAIT) update -qq && apt-get $(APT_WAIT) install -y -qq redis-server >/dev/null; \
	  else echo "redis-server missing (sudo apt-get install -y redis-server): Redis tests will be skipped"; fi; }

# The HTTP door's tests run a real nginx in front of it: Debian's nginx-light.
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get $(APT_WAIT) update -qq && apt-get $(APT_WAIT) install -y -qq nginx-light >/dev/null; \
	  else echo "nginx missing (sudo apt-get install -y nginx-light): nginx tests will be skipped"; fi; }

# The quick loop: everything but the tests marked slow (real Envoy, subprocess servers, > 2 s).
test-fast: install
	$(PY) -m pytest -x -q -m 'not slow'

fuzz: install
	HYPOTHESIS_PROFILE=long timeout 3600 $(PY) -m pytest tests/test_fuzz.py -q

demo: install
	$(PY) -m ext_authz demo run

bench: install
	$(PY) -m bench.run

envoy-configs: install
	$(PY) -m ext_authz.deploy.envoy_config --write-all

image:
	docker build -t ext-authz:0.1.0 .

compose-up:
	docker compose up --build --wait

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
