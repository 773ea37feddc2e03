# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU wheel where no NVIDIA GPU is visible; with one, the CUDA build from the default index.
# Override e.g. `make TORCH_SPEC="torch==2.6.0" run`.
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu),gpu)
TORCH_SPEC ?= torch>=2.2
else
TORCH_SPEC ?= torch==2.13.0
endif

.PHONY: run test test-all venv bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m app.core.science.metrics_cpu
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) main.py

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

test-all: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) main.py bench

clean:
	rm -rf $(VENV) .pytest_cache
