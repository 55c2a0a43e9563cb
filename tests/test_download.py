"""download: against a local HTTP server on 127.0.0.1 serving tiny idx files (good, corrupt, truncated,
wrong md5), a directory mirror, and no network at all."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from itertools import repeat
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from tasks.download import CHECKSUMS_ENV, MIRROR_ENV, DownloadError, download_dataset, md5_of
from tests.tiny_data import write_tiny_mirror

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class MirrorServer:
    """Serves `files` by name; `faults[name]` yields, per request, how that file misbehaves
    ("corrupt", "truncated", "chunked-cut"; see Handler.do_GET) until it runs out."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.faults: dict[str, Iterator[str]] = {}
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                name = self.path.rsplit("/", 1)[-1]
                server.requests[name] += 1
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                fault = next(server.faults.get(name, iter(())), None)
                if fault == "corrupt":
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self.send_response(200)
                if fault == "chunked-cut":  # a chunked body whose connection drops mid-chunk
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])
                    return
                # "truncated": the header promises more bytes than the connection delivers
                promised = len(body) + 1000 if fault == "truncated" else len(body)
                self.send_header("Content-Length", str(promised))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/fashion"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiny_files(tmp_path, monkeypatch) -> Path:
    """Tiny idx files in a folder; their MD5SUMS replaces the canonical checksums for this test."""
    folder = tmp_path / "mirror"
    monkeypatch.setenv(CHECKSUMS_ENV, str(write_tiny_mirror(folder)))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return folder


@pytest.fixture
def server(tiny_files):
    mirror = MirrorServer({name: (tiny_files / name).read_bytes() for name in NAMES})
    yield mirror
    mirror.close()


def assert_only_final_files(raw: Path, names) -> None:
    """No temporary or partial file is left beside the downloads."""
    assert sorted(p.name for p in raw.iterdir()) == sorted(names)


def test_good_files_download_and_verify(server, tiny_files, tmp_path):
    raw = tmp_path / "raw"
    paths = download_dataset(raw, server.url, backoff_s=0)
    assert set(paths) == set(NAMES)
    for name, path in paths.items():
        assert path == raw / name
        assert path.read_bytes() == (tiny_files / name).read_bytes()
    assert all(server.requests[name] == 1 for name in NAMES)
    assert_only_final_files(raw, NAMES)


def test_valid_files_already_present_are_not_fetched_again(server, tmp_path):
    raw = tmp_path / "raw"
    download_dataset(raw, server.url, backoff_s=0)
    (raw / NAMES[0]).write_bytes(b"damaged on disk")
    download_dataset(raw, server.url, backoff_s=0)
    assert server.requests[NAMES[0]] == 2  # the damaged one is replaced
    assert all(server.requests[name] == 1 for name in NAMES[1:])
    download_dataset(raw, server.url, backoff_s=0)
    assert sum(server.requests.values()) == 5


def test_the_mirror_can_come_from_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, server.url)
    download_dataset(tmp_path / "raw", backoff_s=0)
    assert all(server.requests[name] == 1 for name in NAMES)


@pytest.mark.parametrize("fault", ["corrupt", "truncated", "chunked-cut"])
def test_a_bad_response_is_retried_then_fails_naming_the_file_and_the_mirror_variable(server, tmp_path, fault):
    raw, name = tmp_path / "raw", NAMES[2]
    server.faults[name] = repeat(fault)
    with pytest.raises(DownloadError) as caught:
        download_dataset(raw, server.url, attempts=3, backoff_s=0)
    assert server.requests[name] == 3
    message = str(caught.value)
    assert name in message and MIRROR_ENV in message
    # never a half file under its final name, nor a temporary one left behind
    assert_only_final_files(raw, NAMES[:2])


def test_wrong_md5_is_retried_then_refused(server, tiny_files, tmp_path, monkeypatch):
    sums = tiny_files / "MD5SUMS"
    wrong = sums.read_text().replace(md5_of(tiny_files / NAMES[1]), "0" * 32)
    (tmp_path / "WRONG").write_text(wrong)
    monkeypatch.setenv(CHECKSUMS_ENV, str(tmp_path / "WRONG"))
    raw = tmp_path / "raw"
    with pytest.raises(DownloadError, match=NAMES[1]):
        download_dataset(raw, server.url, attempts=2, backoff_s=0)
    assert server.requests[NAMES[1]] == 2
    assert not (raw / NAMES[1]).exists()


def test_a_transient_failure_is_retried(server, tmp_path):
    """The first attempt gets a cut connection, the second succeeds."""
    name = NAMES[0]
    server.faults[name] = iter(["truncated"])
    paths = download_dataset(tmp_path / "raw", server.url, attempts=3, backoff_s=0)
    assert paths[name].exists()
    assert server.requests[name] == 2


def test_directory_mirror(tiny_files, tmp_path):
    paths = download_dataset(tmp_path / "raw", str(tiny_files), backoff_s=0)
    assert all(paths[name].read_bytes() == (tiny_files / name).read_bytes() for name in NAMES)
    assert_only_final_files(tmp_path / "raw", NAMES)


def test_directory_mirror_missing_a_file_says_what_to_do(tiny_files, tmp_path):
    (tiny_files / NAMES[3]).unlink()
    with pytest.raises(DownloadError, match=MIRROR_ENV) as caught:
        download_dataset(tmp_path / "raw", str(tiny_files), attempts=1, backoff_s=0)
    assert NAMES[3] in str(caught.value)


def test_no_mirror_and_no_network_is_a_clear_error(tiny_files, tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(DownloadError) as caught:
        download_dataset(tmp_path / "raw", f"http://127.0.0.1:{closed_port}/", attempts=2, backoff_s=0)
    message = str(caught.value)
    assert MIRROR_ENV in message and NAMES[0] in message
    assert list((tmp_path / "raw").iterdir()) == []


def test_checksum_file_must_cover_the_four_files(tiny_files, tmp_path, monkeypatch):
    partial = tmp_path / "PARTIAL"
    partial.write_text((tiny_files / "MD5SUMS").read_text().splitlines()[0] + "\n")
    monkeypatch.setenv(CHECKSUMS_ENV, str(partial))
    with pytest.raises(DownloadError, match="lacks checksums"):
        download_dataset(tmp_path / "raw", str(tiny_files), backoff_s=0)
