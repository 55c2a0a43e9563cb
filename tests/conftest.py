"""Shared fixtures: tiny generated data, an isolated data home, Prefect's test harness, and one tiny
published release that tests copy instead of retraining."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from storage.home import DataHome  # noqa: E402
from tests.tiny_data import write_tiny_mirror  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_MIRROR = Path(os.environ.get("FASHION_MNIST_MIRROR", REPO.parent / "shared" / "data" / "fashion-mnist"))
TINY_TRAINING = dict(epochs=2, steps_per_epoch=10, examples_per_class=4, gallery_size=50)


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """Every flow in the suite runs against a throwaway Prefect database."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory) -> Path:
    """A directory mirror of tiny generated idx files; FASHION_MNIST_MD5SUMS points at its checksums."""
    folder = tmp_path_factory.mktemp("tiny-mirror")
    md5sums = write_tiny_mirror(folder)
    previous = os.environ.get("FASHION_MNIST_MD5SUMS")
    os.environ["FASHION_MNIST_MD5SUMS"] = str(md5sums)
    yield folder
    if previous is None:
        os.environ.pop("FASHION_MNIST_MD5SUMS", None)
    else:
        os.environ["FASHION_MNIST_MD5SUMS"] = previous


@pytest.fixture
def home(tmp_path, monkeypatch) -> DataHome:
    """An empty data home, also exported as FASHION_SIM_HOME for code that reads the environment."""
    monkeypatch.setenv("FASHION_SIM_HOME", str(tmp_path / "home"))
    return DataHome.from_env(tmp_path / "home").ensure()


@pytest.fixture(scope="session")
def tiny_release_home(tiny_mirror, tmp_path_factory) -> Path:
    """A data home with one release published by the real pipeline flow on tiny data (built once)."""
    from flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("tiny-release") / "home"
    result = pipeline(data_home=str(root), mirror=str(tiny_mirror), **TINY_TRAINING)
    assert result["published"], result
    return root


@pytest.fixture
def published_home(tiny_release_home, tmp_path, monkeypatch) -> DataHome:
    """A private copy of the tiny published home (tests may change it freely)."""
    root = tmp_path / "published"
    shutil.copytree(tiny_release_home, root)
    monkeypatch.setenv("FASHION_SIM_HOME", str(root))
    return DataHome.from_env(root)


@pytest.fixture(scope="session")
def real_mirror() -> Path:
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if not all((REAL_MIRROR / name).exists() for name in files):
        pytest.skip(f"real Fashion-MNIST files not found at {REAL_MIRROR}; set FASHION_MNIST_MIRROR")
    return REAL_MIRROR


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the session; its AWS variables set meanwhile."""
    from tests.seaweedfs import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as variables:
        previous = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        yield variables
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def upload_home(local_root: Path, home: DataHome) -> None:
    """The store part of a local data home (everything but its local folders), copied to `home`'s store."""
    for entry in sorted(local_root.iterdir()):
        if entry.name in ("incoming", "processed", "rejected", "tmp", "raw", "state") or entry.name.startswith("."):
            continue
        if entry.is_dir():
            home.store.fs.put(str(entry), home.store.url(entry.name).removeprefix("s3://"), recursive=True)
        else:
            home.store.write_bytes(entry.name, entry.read_bytes())


@pytest.fixture
def s3_home(s3_server, tmp_path, monkeypatch) -> DataHome:
    """An empty home under a fresh prefix of the test bucket, exported as FASHION_SIM_HOME; its local folder
    (FASHION_SIM_CACHE) and drop folder (FASHION_SIM_INCOMING) in tmp_path."""
    import uuid

    uri = f"s3://{s3_server['S3_BUCKET']}/{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("FASHION_SIM_HOME", uri)
    monkeypatch.setenv("FASHION_SIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FASHION_SIM_INCOMING", str(tmp_path / "drops" / "incoming"))
    monkeypatch.setenv("FASHION_SIM_LEASE_SECONDS", "8")  # a killed writer's lease lapses within a test's patience
    return DataHome.from_env().ensure()


@pytest.fixture(params=["local", "s3"])
def any_home(request) -> DataHome:
    """An empty data home on a local folder, then on S3 (the suites that must hold on both)."""
    return request.getfixturevalue("home" if request.param == "local" else "s3_home")


@pytest.fixture(params=["local", "s3"])
def any_published_home(request, tiny_release_home) -> DataHome:
    """A private copy of the tiny published home on a local folder, then on S3."""
    if request.param == "local":
        return request.getfixturevalue("published_home")
    home = request.getfixturevalue("s3_home")
    upload_home(tiny_release_home, home)
    return home

