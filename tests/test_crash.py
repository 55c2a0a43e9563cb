"""Crash consistency: real pipeline and re-index runs killed with SIGKILL at chosen moments, and
downloads cut halfway or served corrupt. After every crash LATEST names a complete release that loads
and answers (or nothing was published yet), and the next run cleans up and carries on."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import random
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.atomic import leftover_temp_files
from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.home import LATEST, REASON_SUFFIX, DataHome
from storage.lease import lease_seconds
from storage.lock import writer_lock
from storage.releases import complete_release_ids, load_release
from tasks.download import MIRROR_ENV, DownloadError, download_dataset, expected_checksums
from tests import corpus
from tests.conftest import REPO, TINY_TRAINING

RUN_TIMEOUT_S = 600  # a hung run fails the test instead of blocking CI
# Every random kill time in this module is drawn from this seed, and the drawn values are in the test's
# id and in its assertion messages: a failure names what was drawn, and the same seed draws it again.
# (Where the marker line lands relative to the run's own threads is still up to the scheduler.)
CRASH_SEED = 20261129


@dataclass(frozen=True)
class KillDelays:
    """How long after a marker line the runs of test_pipeline_and_reindex_killed_at_any_moment are killed."""

    seed: int
    after_embedding_s: float  # pipeline, after "embed: N items": between embedding the catalogue and publishing
    after_scan_s: float  # re-index, after "ingest: {": between scanning the drop folder and publishing

    @classmethod
    def draw(cls, seed: int) -> "KillDelays":
        rng = random.Random(seed)
        # rounded to the millisecond so that the id shows exactly the delays that are used
        return cls(seed, round(rng.uniform(0.0, 1.5), 3), round(rng.uniform(0.0, 2.0), 3))

    def __str__(self) -> str:
        return f"seed={self.seed}-embed+{self.after_embedding_s:.3f}s-ingest+{self.after_scan_s:.3f}s"


def flow_env() -> dict[str, str]:
    """The subprocess talks to the test harness's Prefect server (no ephemeral server of its own)."""
    from prefect.settings import get_current_settings

    return {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "PYTHONUNBUFFERED": "1"}


def run_flow(module: str, args: list[str], kill_at: str | None = None, delay_s: float = 0.0) -> tuple[int, str]:
    """Run `python -m module args`; when a line matches `kill_at`, wait `delay_s` and SIGKILL the whole
    process group. Returns (exit status, output). Fails if the marker never shows up; a run that
    finishes within `delay_s` (exit status 0) is fine: the store must be consistent either way."""
    process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=flow_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    watchdog = threading.Timer(RUN_TIMEOUT_S, lambda: os.killpg(process.pid, signal.SIGKILL))
    watchdog.start()
    lines, killed = [], False
    try:
        for line in process.stdout:
            lines.append(line)
            if kill_at and not killed and re.search(kill_at, line):
                threading.Event().wait(delay_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                killed = True
        status = process.wait()
    finally:
        watchdog.cancel()
    output = "".join(lines)
    if kill_at:
        assert killed, f"{module} never logged {kill_at!r}:\n{output[-3000:]}"
        assert status in (-signal.SIGKILL, 0), (f"{module} to be killed {delay_s:.3f} s after {kill_at!r} "
                                                 f"exited {status}:\n{output[-3000:]}")
    return status, output


def pipeline_args(home: DataHome, mirror: Path) -> list[str]:
    args = ["--data-home", home.location, "--mirror", str(mirror), "--force-publish", "true"]
    for name, value in TINY_TRAINING.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def assert_consistent(home: DataHome, published: bool = True) -> str | None:
    """What a reader may rely on at any moment; returns the live release id."""
    # the kernel dropped the dead run's flock at once: no stale lock; its lease on S3 lapses by itself
    with writer_lock(home, timeout_s=lease_seconds() + 5 if home.is_remote else 0):
        pass
    releases = complete_release_ids(home)  # a release folder cut short on S3 was just removed by no one:
    if not published:                      # readers only ever see complete ones
        assert not home.store.exists(LATEST) and not releases
        return None
    release = load_release(home)
    queries = release.items.images[:5]
    answers = release.search(queries, k=1)
    assert [a[0].label for a in answers] == release.items.labels[:5].tolist()
    assert [a[0].distance for a in answers] == pytest.approx([0.0] * 5, abs=1e-4)
    return release.release_id


def catalogue_matches(home: DataHome) -> None:
    """No catalogue row belongs to a release that was never published, and none is missing."""
    release = load_release(home)
    assert sorted(release.items.item_ids.tolist()) == Catalog(home.catalog, FASHION_MNIST).load().item_ids.tolist()


@pytest.mark.parametrize("delays", [KillDelays.draw(CRASH_SEED)], ids=str)
def test_pipeline_and_reindex_killed_at_any_moment(any_home, tiny_mirror, tmp_path, delays):
    home = any_home
    args = pipeline_args(home, tiny_mirror)

    # 1. killed while training the first release: nothing published, leftovers in tmp/
    run_flow("flows.pipeline", args, kill_at=r"train epoch 1/")
    assert_consistent(home, published=False)
    assert any(home.tmp.iterdir())

    # 2. the next run cleans up and publishes; killed right after LATEST moved
    _, output = run_flow("flows.pipeline", args, kill_at=r"publish: release \S+ is live")
    assert "recovered from an interrupted run" in output
    first = re.search(r"publish: release (\S+) is live", output).group(1)
    assert assert_consistent(home) == first
    assert not any(home.tmp.iterdir())
    catalogue_matches(home)

    # 3. killed at a random moment between embedding the catalogue and publishing
    status, _ = run_flow("flows.pipeline", args, kill_at=r"embed: \d+ items into", delay_s=delays.after_embedding_s)
    when = f"{delays}: pipeline killed {delays.after_embedding_s:.3f} s after 'embed: N items' (exit {status})"
    live = assert_consistent(home)
    assert live >= first, when

    # 4. a re-index killed at a random moment after scanning the drop folder: no dropped file is lost
    layout = corpus.build_drop_corpus(home.incoming, tmp_path / "outside")
    reindex_args = ["--data-home", home.location, "--settle-seconds", "600"]
    status, _ = run_flow("flows.reindex", reindex_args, kill_at=r"ingest: \{", delay_s=delays.after_scan_s)
    when = f"{delays}: re-index killed {delays.after_scan_s:.3f} s after 'ingest: {{' (exit {status})"
    assert assert_consistent(home) >= live, when
    assert count_drop_files(home) == len(layout), when

    # 5. the next run cleans up what both dead runs left and completes
    status, output = run_flow("flows.reindex", reindex_args)
    assert status == 0, f"{delays}\n{output[-3000:]}"
    assert assert_consistent(home) > live, delays
    assert not any(home.tmp.iterdir()), delays
    assert count_drop_files(home) == len(layout), delays
    assert leftover_temp_files(home.rejected) == [], delays
    assert home.incoming.joinpath("bag", "just-dropped.png").exists()  # still settling: left waiting
    catalogue_matches(home)


def count_drop_files(home: DataHome) -> int:
    """Dropped files wherever they are now: still waiting, processed or rejected (reason files, and
    the temporary file of one that a killed run was writing, aside)."""
    half_written = set(leftover_temp_files(home.rejected, f"*{REASON_SUFFIX}"))
    return sum(1 for folder in (home.incoming, home.processed, home.rejected) for p in folder.rglob("*")
               if (p.is_file() or p.is_symlink()) and not p.name.endswith(REASON_SUFFIX) and p not in half_written)


# ------------------------------------------------------------------------------------------ downloads


class Mirror(http.server.ThreadingHTTPServer):
    """A local HTTP mirror of the tiny files that can cut a file halfway or serve it corrupt."""

    def __init__(self, folder: Path):
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.files = {p.name: p.read_bytes() for p in folder.glob("*.gz")}
        self.cut: dict[str, int] = {}  # name -> how many more responses to cut halfway
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    server: Mirror

    def do_GET(self):  # noqa: N802 - http.server's naming
        name = self.path.lstrip("/")
        self.server.requests.append(name)
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.cut.get(name, 0) > 0:
            self.server.cut[name] -= 1
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tiny_mirror):
    server = Mirror(tiny_mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


NAME = "train-images-idx3-ubyte.gz"


def test_download_cut_halfway_leaves_nothing_and_the_next_run_restarts(mirror, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / f".{NAME}.x1y2.part").write_bytes(b"left by a run killed mid-download")
    mirror.cut[NAME] = 1

    with pytest.raises(DownloadError, match=NAME):
        download_dataset(raw, mirror.url, attempts=1, backoff_s=0)
    assert not (raw / NAME).exists()
    assert not list(raw.glob("*.part"))  # neither this run's partial file nor the killed run's

    paths = download_dataset(raw, mirror.url, attempts=1, backoff_s=0)
    assert hashlib.md5(paths[NAME].read_bytes()).hexdigest() == expected_checksums()[NAME]
    assert mirror.requests.count(NAME) == 2


def test_download_cut_halfway_is_retried_within_the_run(mirror, tmp_path):
    mirror.cut[NAME] = 1
    paths = download_dataset(tmp_path / "raw", mirror.url, attempts=2, backoff_s=0)
    assert hashlib.md5(paths[NAME].read_bytes()).hexdigest() == expected_checksums()[NAME]


def test_mirror_serving_a_wrong_checksum_gets_a_clear_error_and_nothing_is_kept(mirror, tmp_path):
    raw = tmp_path / "raw"
    good = mirror.files[NAME]
    mirror.files[NAME] = good[:-1] + bytes([good[-1] ^ 0xFF])  # same size, one byte wrong

    with pytest.raises(DownloadError) as raised:
        download_dataset(raw, mirror.url, attempts=3, backoff_s=0)
    message = str(raised.value)
    assert NAME in message and MIRROR_ENV in message and "md5" in message
    assert mirror.requests.count(NAME) == 3
    assert not (raw / NAME).exists() and not list(raw.glob("*.part"))
