"""What a person reads in the terminal: a user error is one `error:` line with no traceback (which
Prefect's run log keeps), --help says each default once, a pipeline run prints its steps and a
search its JSON without native libraries' chatter, `ui.search --save` writes the pictures as files,
and long steps show their progress."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from storage.images import normalise_file
from storage.releases import load_release
from storage.runtime import VERBOSE_ENV
from tasks.logs import Progress
from tests import corpus
from tests.conftest import REPO
from ui import search

# what issue 19 found on a plain run: TensorFlow's C++ start-up, NMSLIB's advice, TF Similarity's
# print and tqdm bars, LiteRT's notice, Prefect's traceback and its temporary server, a library's name
NOISE = ("cuInit", "oneDNN", "NMSLIB", "initial batch size", "XNNPACK", "Traceback", "%|", "PIL",
         "temporary server")


def run(*args: str, verbose: bool = False, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it: unset
    env.pop(VERBOSE_ENV, None)
    if verbose:
        env[VERBOSE_ENV] = "1"
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def noise_in(completed: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (completed.stdout + completed.stderr).splitlines()
            if any(word in line for word in NOISE)]


def test_a_user_error_is_one_line_without_a_traceback(published_home, tmp_path):
    published_home.latest.unlink()
    published_home.latest.mkdir()
    (published_home.incoming / "shirt.png").write_bytes(corpus.encode(corpus.garment(variant=1), "PNG"))
    prefect_home = tmp_path / "prefect"  # where the run's temporary Prefect server keeps its database
    quiet = run("flows.reindex", "--data-home", str(published_home.root), "--settle-seconds", "0",
                PREFECT_HOME=str(prefect_home))
    errors = [line for line in quiet.stderr.splitlines() if line.startswith("error:")]
    assert quiet.returncode == 1 and len(errors) == 1 and "LATEST is a directory" in errors[0], quiet.stderr
    assert "Finished in state Failed" not in quiet.stderr and not noise_in(quiet), quiet.stderr
    with sqlite3.connect(prefect_home / "prefect.db") as database:  # the run's log keeps the traceback
        logged = [row[0] for row in database.execute("SELECT message FROM log")]
    assert any("LATEST is a directory" in message and "Traceback" in message for message in logged), logged
    loud = run("flows.reindex", "--data-home", str(published_home.root), "--settle-seconds", "0", "--verbose")
    assert loud.returncode == 1 and "Traceback" in loud.stderr  # --verbose brings Prefect's report back


@pytest.mark.parametrize("module", ["flows.reindex", "flows.pipeline", "ui.search"])
def test_help_states_each_default_once(module):
    shown = run(module, "--help")
    assert shown.returncode == 0 and "(default: )" not in shown.stdout and "--verbose" in shown.stdout
    text = " ".join(shown.stdout.split())
    assert "$FASHION_SIM_HOME, else ./data)" in text
    for option in re.split(r" (?=--[a-z])", text.split("options:", 1)[1]):  # each option with its help
        assert option.count("(default:") <= 1, option


def test_a_pipeline_run_prints_its_steps_and_no_library_chatter(tiny_mirror, tmp_path):
    """What `make demo` prints before the page, on tiny data."""
    completed = run("flows.pipeline", "--data-home", str(tmp_path / "home"), "--mirror", str(tiny_mirror),
                    "--epochs", "1", "--steps-per-epoch", "5", "--examples-per-class", "4", "--gallery-size", "20")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout)["published"]
    assert "train epoch 1/1" in completed.stderr and "embed: 400 items" in completed.stderr
    assert not noise_in(completed), noise_in(completed)


def test_search_prints_only_its_json(published_home, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(corpus.encode(corpus.garment(variant=2), "PNG"))
    found = run("ui.search", str(photo), "--k", "2", "--data-home", str(published_home.root))
    assert found.returncode == 0, found.stderr
    assert found.stderr == "", found.stderr  # no "Created TensorFlow Lite XNNPACK delegate", nothing
    [line] = found.stdout.splitlines()
    assert len(json.loads(line)["neighbours"]) == 2 and not noise_in(found)


def test_search_saves_the_pictures_as_image_files(published_home, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(corpus.encode(corpus.garment(variant=3), "PNG"))
    release = load_release(published_home)
    item_id = int(release.items.item_ids[7])
    saved = tmp_path / "saved"
    code = search.main([str(photo), "--item", str(item_id), "--k", "3", "--save", str(saved),
                        "--data-home", str(published_home.root)])
    assert code == 0
    by_photo, by_item = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    def pixels(path: str) -> np.ndarray:
        with Image.open(path) as picture:
            assert picture.format == "PNG"
            return np.asarray(picture)

    def stored(item: int) -> np.ndarray:
        return np.squeeze(release.items.images[release.row_of(item)])

    searched = np.squeeze(normalise_file(photo, release.dataset).pixels)
    assert (pixels(by_photo["query_file"]) == searched).all()  # the normalised image, as searched
    assert (pixels(by_item["query_file"]) == stored(item_id)).all()
    for result, folder in ((by_photo, saved / "image-1"), (by_item, saved / f"item-{item_id}")):
        assert len(result["neighbours"]) == 3
        for neighbour in result["neighbours"]:
            assert neighbour["file"].startswith(str(folder))
            assert (pixels(neighbour["file"]) == stored(neighbour["item_id"])).all()  # a file of the item itself


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
