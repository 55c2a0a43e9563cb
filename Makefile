# Two commands from a fresh clone: `make demo` (set up, run the pipeline, open the page) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export FASHION_SIM_HOME ?= $(CURDIR)/data
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: demo pipeline page test venv chromium clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

## Run the full pipeline once (ephemeral Prefect, no server), then serve the page on 127.0.0.1.
demo: pipeline page

pipeline: venv
	$(PY) -m flows.pipeline

page: venv
	$(PY) -m streamlit run ui/app.py --server.address $${HOST:-127.0.0.1} --server.port $${PORT:-8501} --server.headless true

## The whole test suite (installs Debian's chromium for the browser test when it is missing).
test: venv chromium
	$(PY) -m pytest

chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { echo "installing Debian's chromium + chromium-driver for the browser test"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

clean-venv:
	rm -rf $(VENV)
