"""What a person reads in the terminal: a user error is one `error:` line with no traceback, --help
says each default once, and a search prints its JSON without native libraries' chatter."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys

from storage.runtime import VERBOSE_ENV
from tasks.logs import Progress
from tests import corpus
from tests.conftest import REPO


def run(*args: str, verbose: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it: unset
    env.pop(VERBOSE_ENV, None)
    if verbose:
        env[VERBOSE_ENV] = "1"
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_user_error_is_one_line_without_a_traceback(published_home):
    published_home.latest.unlink()
    published_home.latest.mkdir()
    (published_home.incoming / "shirt.png").write_bytes(corpus.encode(corpus.garment(variant=1), "PNG"))
    quiet = run("flows.reindex", "--data-home", str(published_home.root), "--settle-seconds", "0")
    errors = [line for line in quiet.stderr.splitlines() if line.startswith("error:")]
    assert quiet.returncode == 1 and len(errors) == 1 and "LATEST is a directory" in errors[0], quiet.stderr
    assert "Traceback" not in quiet.stderr and "Finished in state Failed" not in quiet.stderr
    loud = run("flows.reindex", "--data-home", str(published_home.root), "--settle-seconds", "0", "--verbose")
    assert loud.returncode == 1 and "Traceback" in loud.stderr  # --verbose brings Prefect's report back


def test_help_states_each_default_once():
    shown = run("flows.reindex", "--help")
    assert shown.returncode == 0 and "(default: )" not in shown.stdout
    assert "$FASHION_SIM_HOME, else ./data)" in " ".join(shown.stdout.split()) and "--verbose" in shown.stdout


def test_search_prints_only_its_json(published_home, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(corpus.encode(corpus.garment(variant=2), "PNG"))
    found = run("ui.search", str(photo), "--k", "2", "--data-home", str(published_home.root))
    assert found.returncode == 0, found.stderr
    assert found.stderr == "", found.stderr  # no "Created TensorFlow Lite XNNPACK delegate", nothing
    [line] = found.stdout.splitlines()
    assert len(json.loads(line)["neighbours"]) == 2


def test_progress_without_a_terminal_is_a_log_line_with_the_time_left(caplog):
    log = logging.getLogger("progress-test")
    with caplog.at_level(logging.INFO, logger="progress-test"):
        with Progress("train", 4, "step", log, every_s=0, terminal=False) as progress:
            for _ in range(4):
                progress.advance(loss="0.500")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3  # the last step is the caller's own line ("train epoch ...")
    assert re.fullmatch(r"train: 1/4 steps \(25%\), loss 0\.500, \d+ s so far, about \d+ s left", lines[0])


def test_progress_on_a_terminal_is_a_bar_with_the_time_left(monkeypatch, caplog):
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    log = logging.getLogger("progress-test")
    with caplog.at_level(logging.INFO, logger="progress-test"):
        with Progress("embed", 8, "image", log, terminal=True) as progress:
            progress.advance(4)
            progress.note("between")
            progress.advance(4)
    drawn = screen.getvalue()
    assert re.search(r"embed: +50%\|.*\| 4/8 \[\d\d:\d\d<\d\d:\d\d", drawn), drawn  # done, time left
    assert drawn.endswith("\r")  # the bar is cleared at the end
    assert [record.getMessage() for record in caplog.records] == ["between"]  # a note is a log line
