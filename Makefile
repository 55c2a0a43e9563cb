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

PAGE = $(PY) -m streamlit run ui/app.py --server.address $${HOST:-127.0.0.1} --server.port $${PORT:-8501} --server.headless true

page: venv
	$(PAGE)

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
## deployments of prefect.yaml served with their schedules (flows/serve.py), and the page. The server's
## database and log live in the data home's state folder (storage/home.py), so its UI shows this home's
## runs only. Ctrl-C (or SIGTERM) stops the page and serve, then the server (serve still needs it to
## pause its schedules), and make reports no error: the server and the page run in sessions of their
## own (setsid), so only this recipe's trap stops them, in that order.
PREFECT_PORT ?= 4200
PREFECT_URL = http://127.0.0.1:$(PREFECT_PORT)/api
PREFECT_STATE = PREFECT_HOME="$$($(PY) -m storage.home state)" || exit 1; export PREFECT_HOME

up: venv
	@$(PREFECT_STATE); export PREFECT_API_URL=$(PREFECT_URL); server= serve= page=; \
	stop() { kill $$page $$serve 2>/dev/null; for p in $$page $$serve; do wait $$p; done; kill $$server 2>/dev/null; wait; }; \
	trap stop EXIT; trap 'exit 0' INT TERM; \
	setsid $(PY) -m prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) >"$$PREFECT_HOME/prefect-server.log" 2>&1 & server=$$!; \
	$(PY) -m flows.serve --wait-for-server 300 & serve=$$!; \
	echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT) (database and server log in $$PREFECT_HOME)"; \
	setsid $(PAGE) & page=$$!; wait $$page

## The same with a work pool and a worker instead of serve: `make server`, then `make deploy` and `make worker`.
server: venv
	@$(PREFECT_STATE); $(PY) -m prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

deploy: venv
	PREFECT_API_URL=$(PREFECT_URL) $(PY) -m prefect work-pool create fashion-sim --type process --overwrite
	PREFECT_API_URL=$(PREFECT_URL) $(PY) -m prefect --no-prompt deploy $$($(PY) -m flows.serve --names)

worker: venv
	PREFECT_API_URL=$(PREFECT_URL) $(PY) -m prefect worker start --pool fashion-sim

## Kubernetes (README "Scale out"), against the Prefect server in PREFECT_API_URL: the work pool (its base
## job template from flows/kubernetes.py), then the k8s-* deployments of prefect.yaml, which need
## FASHION_SIM_IMAGE and an s3:// FASHION_SIM_HOME (DASK_SCHEDULER_ADDRESS: optional). Not run here.
.PHONY: k8s-pool k8s-deploy
k8s-pool: venv
	@template=$$(mktemp) && $(PY) -m flows.kubernetes >$$template && \
	  $(PY) -m prefect work-pool create fashion-sim-k8s --type kubernetes --base-job-template $$template --overwrite; \
	  status=$$?; rm -f $$template; exit $$status

k8s-deploy: venv
	@test -n "$$FASHION_SIM_IMAGE" || { echo "set FASHION_SIM_IMAGE to the worker image (README \"Scale out\")"; exit 1; }
	@case "$$FASHION_SIM_HOME" in s3://*) ;; *) echo "set FASHION_SIM_HOME to the s3:// store the cluster uses"; exit 1;; esac
	DASK_SCHEDULER_ADDRESS="$${DASK_SCHEDULER_ADDRESS:-}" $(PY) -m prefect --no-prompt deploy --name 'k8s-*'
