"""`make up` as a person runs it, once for each of two data homes: each keeps its Prefect database in
its own state folder (the second one's UI shows none of the first one's runs), a run triggered while
another run of the deployment is in progress waits its turn and completes, and Ctrl-C (SIGINT to the
whole foreground group, as a terminal sends it) or SIGTERM ends everything without an error line.
Each `make up` runs in its own process group, killed at the end whatever happens."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.common import free_port
from flows.serve import wait_for_server
from storage.home import DataHome
from tests.conftest import REPO
from tests.test_reindex import drop_labelled

pytestmark = pytest.mark.server
DEPLOYMENT = "reindex/drop-folder"
VENV = Path(sys.executable).parent.parent
NOISE = ("Error", "Interrupt", "Traceback", "Terminated")  # what make, Python or sh print on a bad stop


class MakeUp:
    """`make up` for one data home, on free ports, with its output in a file."""

    def __init__(self, home: DataHome, log: Path):
        self.home, self.log_path = home, log
        self.api = f"http://127.0.0.1:{free_port()}/api"
        env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
        env.update(FASHION_SIM_HOME=str(home.root), PREFECT_PORT=self.api.split(":")[-1].split("/")[0],
                   PORT=str(free_port()), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_RUNNER_POLL_FREQUENCY="2",  # the served runner looks for due runs every 2 s
                   PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2")  # and retries a queued one
        self.log = open(log, "wb")
        # -o: the test's own venv is used as it is, never reinstalled
        self.process = subprocess.Popen(["make", "--no-print-directory", f"VENV={VENV}", "-o", f"{VENV}/.installed",
                                         "up"], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_served(self, timeout_s: float = 300) -> None:
        try:
            wait_for_server(self.api, timeout_s)
        except SystemExit as error:
            pytest.fail(f"{error}\n{self.output()[-3000:]}")
        deadline = time.monotonic() + timeout_s
        while "being served" not in self.output():
            assert time.monotonic() < deadline and self.process.poll() is None, self.output()[-3000:]
            time.sleep(1)

    def stop(self, sig: int) -> int:
        """Send `sig` (to the whole group for SIGINT, as a terminal does; to make alone for SIGTERM)."""
        if sig == signal.SIGINT:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=120)
        self.log.close()
        return code

    def kill(self) -> None:
        """Whatever is left of the group (nothing, after a clean stop)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.log.close()

    def group_is_gone(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return True
        return False


def call(method: str, url: str, **options):
    """One request to the Prefect API, retried while it answers 503 (its "database busy", which
    Prefect's own client retries too)."""
    for _ in range(30):
        response = httpx.request(method, url, timeout=30, **options)
        if response.status_code != 503:
            return response.raise_for_status().json()
        time.sleep(1)
    return response.raise_for_status().json()


def trigger(api: str, deployment: str) -> str:
    """Create a run of the deployment now, as `prefect deployment run` does; its id."""
    found = call("GET", f"{api}/deployments/name/{deployment}")
    return call("POST", f"{api}/deployments/{found['id']}/create_flow_run", json={})["id"]


def state_history(api: str, run_id: str) -> list[str]:
    states = call("GET", f"{api}/flow_run_states/", params={"flow_run_id": run_id})
    return [state["name"] for state in sorted(states, key=lambda state: state["timestamp"])]


def wait_for_final_state(api: str, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = call("GET", f"{api}/flow_runs/{run_id}")["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
            return state["name"]
        time.sleep(1)
    return "timeout"


def run_ids(api: str) -> set[str]:
    return {run["id"] for run in call("POST", f"{api}/flow_runs/filter", json={"limit": 200})}


def test_make_up_keeps_each_homes_runs_and_stops_cleanly(published_home, tiny_release_home, tmp_path):
    first = published_home
    second = DataHome.from_env(shutil.copytree(tiny_release_home, tmp_path / "second"))
    up = MakeUp(first, tmp_path / "first.log")
    try:
        up.wait_until_served()
        drop_labelled(first.incoming, "trouser", 1, 2, seed=311)  # the first run has work to do
        mine = [trigger(up.api, DEPLOYMENT), trigger(up.api, DEPLOYMENT)]  # the second collides with it
        finals = [wait_for_final_state(up.api, run_id, timeout_s=240) for run_id in mine]
        histories = [state_history(up.api, run_id) for run_id in mine]
        assert finals == ["Completed", "Completed"], (histories, up.output()[-3000:])
        assert any("AwaitingConcurrencySlot" in history for history in histories), histories
        code = up.stop(signal.SIGINT)
    finally:
        up.kill()
    stopped = up.output().split("being served", 1)[1]
    # make dies of the SIGINT it re-raises on itself (GNU make does, whatever its recipe returns): the
    # shell shows no message for that; what matters is that no line reports an error
    assert code in (0, -signal.SIGINT), up.output()[-3000:]
    assert not [line for line in stopped.splitlines() if any(word in line for word in NOISE)], stopped
    assert up.group_is_gone()
    with sqlite3.connect(first.state / "prefect.db") as database:  # the first home's own database
        first_runs = {row[0] for row in database.execute("SELECT id FROM flow_run")}
    assert set(mine) <= first_runs

    up = MakeUp(second, tmp_path / "second.log")
    try:
        up.wait_until_served()
        second_runs = run_ids(up.api)
        code = up.stop(signal.SIGTERM)
    finally:
        up.kill()
    assert (second.state / "prefect.db").exists() and (second.state / "prefect-server.log").exists()
    assert not second_runs & (first_runs | set(mine)), "the second home's server shows the first home's runs"
    assert code in (0, -signal.SIGTERM) and "Error" not in up.output(), up.output()[-3000:]
    assert up.group_is_gone()
