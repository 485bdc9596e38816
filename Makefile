# megatron_lite: `make install`, `make test`, `make lint`, `make docs`.
# torch is installed FIRST and pinned, so that no later requirement pulls a (multi-GB) CUDA
# build onto a CPU machine; on a GPU machine pass your CUDA build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.install-stamp
# pytest-xdist processes for make test: most tests wait on subprocesses (deepy launches, gloo
# ranks), so two workers keep both cores of a small machine busy. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
REQS := requirements/requirements.txt requirements/requirements-dev.txt pyproject.toml

.PHONY: install test lint docs demo clean-venv

install: $(STAMP)

# Re-runs only when a requirements file changed: a second `make install` takes a second.
$(STAMP): $(REQS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	# DeepSpeed is a source package that imports torch in its setup: no build isolation.
	$(PIP) install --no-build-isolation -r requirements/requirements.txt -r requirements/requirements-dev.txt
	# pyproject.toml declares the same ranges, all satisfied by now: this installs only the package.
	$(PIP) install --no-build-isolation -e .
	touch $(STAMP)

test: install
	# DeepSpeed JIT-builds its CPU comm op per checkout; a build dir of our own keeps a stale lock
	# or another checkout's build in ~/.cache from blocking the suite.
	TORCH_EXTENSIONS_DIR=$(CURDIR)/.venv/torch_extensions HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The README's first command: corpus -> tokenizer -> preprocess -> train -> generate.
demo: install
	$(PY) tools/demo.py

lint: install
	$(VENV)/bin/ruff check megatron_lite tools tests deepy.py *.py

docs: install
	$(PY) tools/gen_config_docs.py --output docs/config.md

clean-venv:
	rm -rf $(VENV)
