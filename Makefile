# On a fresh machine:               `make run`  (installs, opens the app on the demo)
#                                   `make test` (installs, runs the whole test suite)
#                                   `make lint` (ruff, and the import contracts of pyproject.toml)
#                                   `make bundle` (the offline bundle from this venv, its frozen
#                                                  end-to-end check, and proof the check bites)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.p2p-installed

.PHONY: install run lint test smoke bench retrain-demo bundle

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision must be installed as a matching pair
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	bash scripts/install-system-deps.sh || true
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/p2p-desktop

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

smoke: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/p2p-desktop --smoke-test --screenshot out/smoke.png

retrain-demo: $(STAMP)
	$(PY) scripts/train_demo_bundle.py --out resources/models

# The offline bundle (packaging/README.md): trace the jobs' data files, build with PyInstaller from
# this venv, run every job frozen (packaging/check_bundle.sh), then prove that check fails when a
# collected data file is missing. Output in packaging/dist (several GB; CI removes it afterwards).
bundle: $(STAMP)
	$(PY) -m pip install -q "pyinstaller>=6.5"
	bash packaging/build.sh --clean --venv $(VENV)
	bash packaging/check_bundle_detects.sh packaging/dist/p2p-desktop
