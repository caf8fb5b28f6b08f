# om-teach: every target sets up .venv first when it is missing or out of date.
#   make lab      set up, then open the course in JupyterLab
#   make test     set up, then run ruff, the unit tests and every notebook (nbval)
#   make course   set up, then run every ready notebook headless and print its time and memory
#   make bench    set up, then run the benchmarks and write build/bench.md

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.om-teach-installed
JOBS   ?= 2

# Kernels come from this venv, even where a user-wide "python3" kernel exists.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter

# torch goes in first, as the CPU build, so that no later install pulls a multi-GB CUDA build.
# Only torch itself comes from the CPU index (--no-deps); what it needs comes with the package.
TORCH_VERSION := 2.13.0
ifeq ($(shell uname -s),Linux)
TORCH_SPEC := --no-deps torch==$(TORCH_VERSION)+cpu --extra-index-url https://download.pytorch.org/whl/cpu
else
TORCH_SPEC := --no-deps torch==$(TORCH_VERSION)
endif
# Hide pip's notes about index locations that hold no copy of a package; pipefail keeps pip's
# own exit status.
QUIET := 2>&1 | sed -e '/^WARNING: Location/d'

.PHONY: setup lab test lint unit notebooks course bench constraints doctor clean system-packages

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Setting up $(VENV) (first time: about 2 minutes)"
	@$(BIN)/python -m pip install -q --upgrade pip $(QUIET)
	@$(BIN)/python -m pip install -q $(TORCH_SPEC) $(QUIET)
	@PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,chain,ipfs]' $(QUIET)
	@$(BIN)/python -c "import torch, om_teach; assert '+cu' not in torch.__version__, torch.__version__"
	@$(BIN)/python -m ipykernel install --user --name om-teach --display-name "Python (om-teach)" >/dev/null
	@command -v bwrap >/dev/null && command -v ipfs_cid >/dev/null && command -v chromium >/dev/null \
		&& ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		$(MAKE) --no-print-directory system-packages
	@touch $@

# Debian packages: bubblewrap (the exam grader's sandbox), ipfs-cid (an independent check of
# the store's CIDs), postgresql (the node on PostgreSQL, in its tests) and chromium (the node's
# pages, tested headless through playwright). Debian and Ubuntu: installed here as root.
SYSTEM_PACKAGES := bubblewrap ipfs-cid postgresql chromium
system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing $(SYSTEM_PACKAGES)"; \
		apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null; }; \
	else echo "The exam grader and the tests need: sudo apt-get install $(SYSTEM_PACKAGES)"; fi

# The local servers of the Sonar modules (anvil, js-ipfs), from the npm registry, as locked.
# Not `npm ci`: npm 11 refuses this lockfile over optional dependencies for other platforms
# (anvil's darwin/win32 builds) that it records without versions.
NODE_STAMP := node_modules/.package-lock.json
$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null; then \
		echo "Installing anvil and js-ipfs with npm (first time: about 4 minutes)"; \
		npm install --no-save --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm is missing: the Sonar modules need Node.js 20 and npm"; fi

setup: $(NODE_STAMP)

lab: $(STAMP) $(NODE_STAMP)
	$(BIN)/om-teach lab

test: lint unit notebooks

lint: $(STAMP)
	$(BIN)/ruff check om_teach tests notebooks benchmarks
	$(BIN)/ruff format --check om_teach tests benchmarks

unit: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest -n $(JOBS) tests

notebooks: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest -n $(JOBS) --dist loadfile --nbval-lax notebooks

course: $(STAMP) $(NODE_STAMP)
	$(BIN)/om-teach course run

bench: $(STAMP)
	@$(BIN)/python -c "import nbgrader" 2>/dev/null || \
		PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,chain,ipfs,bench]' $(QUIET)
	@mkdir -p build
	@# Flower gets a venv of its own (it cannot be installed against constraints.txt); torch and
	@# numpy come from ours, through a .pth file read after its own packages.
	@test -x build/flower/bin/python || { $(PYTHON) -m venv build/flower && \
		build/flower/bin/python -m pip install -q "flwr[simulation]==1.42.0" $(QUIET); }
	@$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$(build/flower/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/zz_om_teach.pth"
	@for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done | tee build/bench.md
	@echo "Wrote build/bench.md"

doctor: $(STAMP)
	$(BIN)/om-teach doctor

constraints: $(STAMP)
	@{ echo "# Versions known to work together (betas included), measured on Python 3.11."; \
	   echo "# The setup installs with -c constraints.txt. Regenerate: make constraints"; \
	   $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt

clean:
	rm -rf $(VENV) build
