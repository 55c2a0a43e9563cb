"""prefect.yaml: it is what `prefect deploy` accepts, every entrypoint resolves to its flow, the
schedules are there, and flows/serve.py builds the same deployments from it."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import Flow, load_flow_from_entrypoint

from flows.serve import PREFECT_YAML, deployment_specs, runner_deployments
from tests.conftest import REPO

EXPECTED = {  # deployment -> (flow name, schedule kind)
    "weekly": ("pipeline", "cron"),
    "nightly": ("retrain", "cron"),
    "drop-folder": ("reindex", "interval"),
    "daily-cleanup": ("cleanup", "cron"),
}


def test_prefect_yaml_is_a_valid_deploy_file():
    PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    assert {spec["name"] for spec in deployment_specs()} == set(EXPECTED)


@pytest.mark.parametrize("spec", deployment_specs(), ids=lambda spec: spec["name"])
def test_every_deployment_resolves_to_its_flow_and_has_a_schedule(spec):
    flow = load_flow_from_entrypoint(str(REPO / spec["entrypoint"]))
    assert isinstance(flow, Flow)
    flow_name, kind = EXPECTED[spec["name"]]
    assert flow.name == flow_name
    assert spec["work_pool"]["name"] and spec["schedules"]
    assert all(kind in schedule for schedule in spec["schedules"])


def test_serve_builds_the_same_deployments_with_their_schedules(monkeypatch):
    monkeypatch.chdir(REPO)
    built = {d.name: d for d in runner_deployments(deployment_specs())}
    assert set(built) == set(EXPECTED)
    assert built["drop-folder"].schedules[0].schedule.interval == datetime.timedelta(seconds=60)
    assert built["nightly"].schedules[0].schedule.cron == "0 2 * * *"
    assert built["weekly"].schedules[0].schedule.cron == "0 3 * * 0"
    assert built["daily-cleanup"].schedules[0].schedule.cron == "30 4 * * *"
    assert built["daily-cleanup"].parameters == {"keep": 3}
    assert built["drop-folder"].concurrency_limit == 1
    # a run that collides with one in progress waits its turn (tests/test_make_up.py runs it)
    assert {d.concurrency_options.collision_strategy.value for d in built.values()} == {"ENQUEUE"}
    assert built["drop-folder"].entrypoint == "flows/reindex.py:reindex"


@pytest.mark.parametrize("module,flags", [
    ("flows.reindex", ("--data-home", "--settle-seconds", "--lock-timeout-s")),
    ("flows.retrain", ("--epochs", "--steps-per-epoch", "--learning-rate", "--replay-size", "--gate-tolerance")),
    ("flows.serve", ("--only", "--wait-for-server")),
    ("flows.remove", ("ITEM_IDS", "--path", "--image", "--reason", "--undo")),
    ("flows.rollback", ("RELEASE_ID", "--drop-newer")),
    ("flows.cleanup", ("--keep", "--recently-live-minutes")),
])
def test_command_lines_list_their_parameters(module, flags):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in flags:
        assert flag in out.stdout
