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

## A real S3 server on this machine (SeaweedFS) for an s3:// data home: README "A store on S3".
.PHONY: s3
s3: venv
	$(PY) -m tests.seaweedfs --dir $(CURDIR)/s3-data --s3-port $${S3_PORT:-8333}

## Keep learning (README "Keeping current"): each flow once, no server needed.
.PHONY: reindex retrain up server deploy worker
reindex: venv
	$(PY) -m flows.reindex

retrain: venv
	$(PY) -m flows.retrain

## The scheduled system on one machine: a Prefect server on 127.0.0.1 (UI on PREFECT_PORT), the
## deployments of prefect.yaml served with their schedules (flows/serve.py), and the page. Ctrl-C stops all.
PREFECT_PORT ?= 4200
PREFECT_URL = http://127.0.0.1:$(PREFECT_PORT)/api

up: venv
	@mkdir -p "$(FASHION_SIM_HOME)"; \
	export PREFECT_API_URL=$(PREFECT_URL); \
	$(PY) -m prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) >"$(FASHION_SIM_HOME)/prefect-server.log" 2>&1 & server=$$!; \
	trap 'kill $$serve $$server 2>/dev/null; wait' EXIT INT TERM; \
	$(PY) -m flows.serve --wait-for-server 300 & serve=$$!; \
	echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT) (server log: $(FASHION_SIM_HOME)/prefect-server.log)"; \
	$(MAKE) --no-print-directory page

## The same with a work pool and a worker instead of serve: `make server`, then `make deploy` and `make worker`.
server: venv
	$(PY) -m prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

deploy: venv
	PREFECT_API_URL=$(PREFECT_URL) $(PY) -m prefect work-pool create fashion-sim --type process --overwrite
	PREFECT_API_URL=$(PREFECT_URL) $(PY) -m prefect --no-prompt deploy --all

worker: venv
	PREFECT_API_URL=$(PREFECT_URL) $(PY) -m prefect worker start --pool fashion-sim
