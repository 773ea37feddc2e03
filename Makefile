# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The developer's environment: the viewer (gui pulls numba too) and the test tools. A headless
# install is plain `pip install .` (see README).
EXTRAS ?= dev,gui
# With an NVIDIA GPU, the CUDA build from the default index. Without one, the CPU build: a CPU wheel
# that pip finds on this machine (find-links, a local index) when there is one, else the CPU build
# from PyTorch's CPU index, never PyPI's default torch, which is the CUDA build (several GB) on Linux.
# Override e.g. `make TORCH_SPEC="torch==2.6.0" run`.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu),gpu)
TORCH_SPEC ?= torch>=2.2
HAS_GPU := 1
else
TORCH_SPEC ?= torch==2.13.0
HAS_GPU :=
endif

.PHONY: run test test-all venv torch bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(MAKE) --no-print-directory torch
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	$(PY) -m app.core.science.metrics_cpu
	touch $(STAMP)

# --dry-run --no-index asks pip whether it can install TORCH_SPEC from this machine alone
torch:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if [ -n "$(HAS_GPU)" ] || $(PY) -m pip install --dry-run --no-index --no-deps -q "$(TORCH_SPEC)" >/dev/null 2>&1; then \
		$(PY) -m pip install "$(TORCH_SPEC)"; \
	else \
		$(PY) -m pip install "$(TORCH_SPEC)" --index-url "$(TORCH_CPU_INDEX)"; \
	fi

venv: $(STAMP)

run: $(STAMP)
	$(PY) main.py

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q --durations=15

test-all: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) main.py bench

clean:
	rm -rf $(VENV) .pytest_cache
