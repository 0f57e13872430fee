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

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) medssl-demo .pytest_cache .hypothesis

# A longer reader fuzz campaign than the test suite runs (see tests/io/test_fuzz.py).
fuzz: $(VENV)/.installed
	MEDSSL_FUZZ_CASES=$${MEDSSL_FUZZ_CASES:-50000} $(PY) -m pytest -q -p no:xdist tests/io/test_fuzz.py -s

bench: $(VENV)/.installed
	$(VENV)/bin/medssl bench all --out bench/results.json
