# On a fresh machine:               `make run`  (installs, opens the app on the demo)
#                                   `make test` (installs, runs the whole test suite)
#                                   `make lint` (ruff, and the import contracts of pyproject.toml)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.p2p-installed

.PHONY: install run lint test smoke bench retrain-demo

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
