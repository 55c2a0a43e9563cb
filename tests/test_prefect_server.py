"""The scheduled system for real: a Prefect server on 127.0.0.1, `prefect deploy --all` from
prefect.yaml and a process worker running a triggered re-index that publishes the dropped images,
then the same deployment served by flows/serve.py (what `make up` runs) completing a triggered run.
Every subprocess runs in its own process group and is killed at the end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.common import free_port
from flows.serve import deploy_arguments, wait_for_server
from storage.releases import latest_release_id, load_release
from tests.conftest import REPO
from tests.test_reindex import drop_labelled

pytestmark = pytest.mark.server
DEPLOYMENT = "reindex/drop-folder"


class Processes:
    """Starts commands in their own process groups with logs in files; stops them all."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.started = folder, env, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((process, log))
        return process

    def run(self, name: str, *args: str, timeout: float = 180) -> None:
        process = self.start(name, *args)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = "timeout"
        assert code == 0, f"{' '.join(args)} -> {code}:\n{self.tail(name)}"

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop_all(self) -> None:
        for process, log in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=20)
            log.close()


def start_prefect_server(processes: Processes, port: int) -> None:
    """`prefect server start` on 127.0.0.1:`port` (processes' PREFECT_API_URL), once it answers."""
    processes.start("server", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port))
    try:
        wait_for_server(processes.env["PREFECT_API_URL"], timeout_s=240)
    except SystemExit as error:
        pytest.fail(f"{error}\n{processes.tail('server')}")


def wait_for_log(processes: Processes, name: str, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while text not in processes.tail(name, 1_000_000):
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def test_deployed_and_served_reindex_runs_against_a_real_server(published_home, tmp_path):
    home = published_home
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api_url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "FASHION_SIM_HOME": str(home.root),
           "PREFECT_CLI_PROMPT": "false"}
    processes = Processes(tmp_path, env)
    try:
        start_prefect_server(processes, port)

        # 1. prefect.yaml deployed as is, run by a process worker
        processes.run("pool", "prefect", "work-pool", "create", "fashion-sim", "--type", "process", "--overwrite")
        processes.run("deploy", "prefect", "--no-prompt", "deploy", *deploy_arguments())
        first = drop_labelled(home.incoming, "trouser", 1, 2, seed=301)
        before = latest_release_id(home)
        processes.run("trigger", "prefect", "deployment", "run", DEPLOYMENT, "--param", "settle_seconds=0")
        processes.run("worker", "prefect", "worker", "start", "--pool", "fashion-sim", "--run-once", timeout=300)
        deployed_release = latest_release_id(home)
        assert deployed_release != before, processes.tail("worker")
        assert load_release(home).manifest["kind"] == "reindex"
        assert not any(path.exists() for path in first)

        # 2. the same deployment served by flows/serve.py (what `make up` runs), triggered by hand;
        #    the drop folder is empty now, so a run proves the served flow loads and completes
        processes.start("serve", "flows.serve", "--only", "drop-folder")
        assert wait_for_log(processes, "serve", "being served", timeout_s=120), processes.tail("serve")
        processes.run("trigger-served", "prefect", "deployment", "run", DEPLOYMENT)
        assert wait_for_log(processes, "serve", "Finished in state Completed", timeout_s=180), processes.tail("serve")
        assert latest_release_id(home) == deployed_release
    finally:
        processes.stop_all()
        shutil.rmtree(tmp_path / "prefect-home", ignore_errors=True)
