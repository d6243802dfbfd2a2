# Two commands for a newcomer: `make book` and `make test`.
# Each creates the virtual environment .venv and installs the package the
# first time (or when pyproject.toml changes); afterwards they start at once.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-colab unit notebooks lint book book-smoke gpu-report-dry gpu-rehearsal student lab clean browser

install: $(STAMP)

# The book's tools are installed at the versions of book/constraints.txt (Jupyter Book 1,
# Sphinx 7 and their extensions), so that the site builds the same everywhere.
$(STAMP): pyproject.toml book/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c book/constraints.txt -e '.[dev]'
	touch $(STAMP)

# ruff (lint and format), then unit tests, the real-path rehearsal, book checks and
# every notebook under the smoke profile. One pytest worker per core, each with one
# thread: the small models of the smoke profile gain little from a second thread. A
# file (a notebook's cells share one kernel) stays on one worker; the longest file (the
# real-path rehearsal) is listed first and kept first, so that short ones fill the end.
# Then the book as a user builds it (notebooks executed, -W) under a second seed
# (COURSE_SEED=1) and a T4's numerics (COURSE_AMP=fp16: float16 autocast with a gradient
# scaler, on the CPU too): an assert that holds only for the book's own seeds or only in
# float32, a glued value Sphinx cannot format or a cell writing to stderr fails it
# (tests/book_build.py).
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks book/_ext
	COURSE_PROFILE=smoke OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/test_real_path.py notebooks tests -n auto --dist loadfile --no-loadscope-reorder --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --durations=15
	$(MAKE) book-smoke
	$(MAKE) gpu-report-dry

# benchmarks/gpu_report.py, the script a GPU loan runs, rehearsed on the CPU at smoke
# sizes (a stand-in chapter, no torch.compile) so that it cannot rot between loans.
gpu-report-dry: $(STAMP)
	rm -rf _build/gpu-report-dry
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/gpu_report.py _build/gpu-report-dry --dry-run

# Every chapter's gpu profile on a machine without a GPU, each training loop capped at
# 2 batches per pass (COURSE_MAX_STEPS): every code path at the gpu profile's sizes, the
# claims that 2 steps cannot reach listed (about 25 min on 2 cores; not part of `test`).
gpu-rehearsal: $(STAMP)
	COURSE_PROFILE=gpu $(BIN)/python benchmarks/run_notebooks.py --max-steps 2 notebooks/*.ipynb

# The executed book under the smoke profile, a second seed and float16, in _build/smoke.
book-smoke: $(STAMP)
	rm -rf _build/smoke
	COURSE_PROFILE=smoke COURSE_SEED=$${COURSE_SEED:-1} COURSE_AMP=$${COURSE_AMP:-fp16} OMP_NUM_THREADS=1 $(BIN)/python tests/book_build.py _build/smoke

# The real-browser test of the site (tests/test_site.py) drives the system Chromium.
# Installed here when missing and possible (root with apt); otherwise that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    >/dev/null 2>&1 && echo "installed chromium for the browser test"; } || \
	  echo "no chromium (apt-get install chromium): the browser test will be skipped"

# The unit tests and the smoke notebooks in a second environment with the versions
# Google Colab ships (tests/colab/pip-freeze.gpu.txt: torch 2.11, torchvision 0.26,
# numpy 2.1, ipywidgets 7, ...), without the book's tools (those tests skip).
# Colab's Python is 3.13 (googlecolab/backend-info's os-info); some of its pinned packages need it.
COLAB_PYTHON ?= $(or $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	  $$p -V >/dev/null 2>&1 && { echo $$p; break; }; done),$(PYTHON))
COLAB_VENV ?= .venv-colab
COLAB_STAMP := $(COLAB_VENV)/.installed-stamp

$(COLAB_STAMP): pyproject.toml tests/colab/pip-freeze.gpu.txt
	test -x $(COLAB_VENV)/bin/python || $(COLAB_PYTHON) -m venv $(COLAB_VENV)
	# every name==version pin, local versions dropped, CUDA's own packages left out: PyPI's
	# torch 2.11.0 is the CUDA 13 build of Colab's torch 2.11.0+cu128 (the same on a CPU)
	sed -n -E 's/^([A-Za-z0-9_.-]+==[^+ ]+).*/\1/p' tests/colab/pip-freeze.gpu.txt | \
	  grep -v -i -E '^(nvidia-|cuda-|triton)' > $(COLAB_VENV)/constraints.txt
	$(COLAB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c $(COLAB_VENV)/constraints.txt -e . pytest nbval pytest-xdist pyyaml packaging ipykernel nbclient nbformat
	touch $(COLAB_STAMP)

test-colab: $(COLAB_STAMP)
	$(COLAB_VENV)/bin/python -c "import torch, torchvision, numpy; print('Colab versions: torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__)"
	COURSE_PROFILE=smoke OMP_NUM_THREADS=1 $(COLAB_VENV)/bin/python -m pytest notebooks tests -n auto --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest tests

notebooks: $(STAMP)
	COURSE_PROFILE=$${COURSE_PROFILE:-smoke} $(BIN)/python -m pytest notebooks --nbval-lax --nbval-current-env --durations=0

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks book/_ext

# The static site in _build/html; notebooks run with the profile that suits
# the machine (set COURSE_PROFILE=smoke for a quick preview).
book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "Open _build/html/index.html"

# The student edition: the book without its worked solutions, checkers and skeletons
# kept, in _build/student, a folder to push as the `student` branch (README).
student: $(STAMP)
	rm -rf _build/student
	$(BIN)/python book/_ext/student.py _build/student

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build .pytest_cache .ruff_cache
