"""The HTTP search service (ui/api.py): every route through FastAPI's TestClient, then one real uvicorn
process on a loopback port (search equals ui.search, a release switch under a request loop, limits,
token, Host check)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from benchmarks.common import free_port, wait_until_serving
from flows.reindex import reindex
from storage.home import DataHome
from storage.images import MAX_FILE_BYTES, encode_png
from storage.match_score import BANDS
from storage.releases import latest_release_id, load_release
from tests.conftest import REPO
from tests.tiny_data import class_images
from ui.api import TOKEN_ENV, ReleaseFollower, ServiceSettings, create_app
from ui.search import search_files, similar_items

TEST_HOSTS = ("testserver", "127.0.0.1", "localhost")


def client(home: DataHome, **settings) -> TestClient:
    follower = ReleaseFollower(home, poll_s=3600)  # the tests move it on by hand (refresh)
    app = create_app(ServiceSettings(home, allowed_hosts=TEST_HOSTS, **settings), follower)
    return TestClient(app, raise_server_exceptions=False)  # a 500 answers as a client sees it


def query_png(tmp_path: Path, label: int = 3, seed: int = 1) -> Path:
    path = tmp_path / f"query-{label}-{seed}.png"
    path.write_bytes(encode_png(class_images(np.array([label]), np.random.default_rng(seed))[0]))
    return path


def without_paths(cli_result: dict) -> list[dict]:
    return [{key: value for key, value in n.items() if key != "path"} for n in cli_result["neighbours"]]


@pytest.fixture
def api(published_home) -> TestClient:
    with client(published_home) as test_client:
        yield test_client
    test_client.app.state.follower.stop()


def test_search_by_body_or_multipart_equals_the_cli(api, published_home, tmp_path):
    png = query_png(tmp_path)
    expected = search_files(load_release(published_home), [png], 5)[0]
    for response in (api.post("/search?k=5", content=png.read_bytes(), headers={"content-type": "image/png"}),
                     api.post("/search?k=5", files={"file": ("q.png", png.read_bytes(), "image/png")})):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["release_id"] == expected["release_id"] and body["no_match"] == expected["no_match"]
        assert body["match"] == expected["match"] in BANDS
        got = [{key: value for key, value in n.items() if key != "image_url"} for n in body["neighbours"]]
        assert got == without_paths(expected)
        assert [n["image_url"] for n in body["neighbours"]] == [f"/items/{n['item_id']}/image"
                                                               for n in body["neighbours"]]


def test_label_filter_and_parameter_errors(api, tmp_path):
    png = query_png(tmp_path).read_bytes()
    body = api.post("/search?k=4&label=bag", content=png).json()
    assert len(body["neighbours"]) == 4 and {n["label_name"] for n in body["neighbours"]} == {"Bag"}
    unknown = api.post("/search?label=hats", content=png)
    assert unknown.status_code == 422 and "Ankle boot" in unknown.json()["detail"]
    for bad in ("k=0", f"k={10**6}", "k=two"):
        assert api.post(f"/search?{bad}", content=png).status_code == 422


def test_bad_images_get_the_cli_reason_and_limits_get_413(api, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    response = api.post("/search", content=bad.read_bytes())
    reason = search_files(load_release(DataHome.from_env()), [bad], 3)[0]["error"]
    assert response.status_code == 400 and response.json() == {"detail": reason}
    assert api.post("/search", files={"other": ("x.png", b"x")}).status_code == 400
    huge = api.post("/search", content=bytes(MAX_FILE_BYTES + 100 * 1024))
    assert huge.status_code == 413 and "MB limit" in huge.json()["detail"]
    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, format="PNG")  # 48 megapixels in a small file
    too_many = api.post("/search", content=buffer.getvalue())
    assert too_many.status_code == 413 and "megapixel" in too_many.json()["detail"]


def test_item_routes(api, published_home):
    release = load_release(published_home)
    item_id = int(release.items.item_ids[7])
    item = api.get(f"/items/{item_id}").json()
    assert item["item_id"] == item_id and item["label"] == int(release.items.labels[7])
    assert item["image_url"] == f"/items/{item_id}/image" and item["release_id"] == release.release_id
    image = api.get(f"/items/{item_id}/image")
    assert image.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image.content))), release.items.images[7])
    similar = api.get(f"/items/{item_id}/similar?k=5").json()
    assert [n["rank"] for n in similar["neighbours"]] == [1, 2, 3, 4, 5]
    assert item_id not in [n["item_id"] for n in similar["neighbours"]]
    assert without_paths(similar_items(release, [item_id], 5)[0]) == [
        {key: value for key, value in n.items() if key != "image_url"} for n in similar["neighbours"]]
    for route in (f"/items/{10**9}", f"/items/{10**9}/image", f"/items/{10**9}/similar"):
        missing = api.get(route)
        assert missing.status_code == 404 and "no item" in missing.json()["detail"]
    assert api.get("/items/abc").status_code == 422


def test_health_metrics_and_openapi(api, published_home, tmp_path):
    api.post("/search", content=query_png(tmp_path).read_bytes())
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["release_id"] == latest_release_id(published_home)
    assert health["items"] == len(load_release(published_home).items) and health["uptime_s"] >= 0
    metrics = api.get("/metrics").text
    assert 'fashion_sim_requests_total{route="/search",status="200"} 1.0' in metrics
    assert "fashion_sim_request_seconds_bucket" in metrics
    assert f'fashion_sim_release_items{{release_id="{health["release_id"]}"}}' in metrics
    assert "/items/{item_id}/similar" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200


def test_token_host_check_cors_and_no_tracebacks(published_home, tmp_path, monkeypatch):
    png = query_png(tmp_path).read_bytes()
    with client(published_home, token="s3cret", cors_origins=("https://shop.example",)) as guarded:
        assert guarded.get("/health").status_code == 200
        for route in ("/metrics", "/items/0"):
            assert guarded.get(route).status_code == 401
        assert guarded.post("/search", content=png).status_code == 401
        assert guarded.post("/search", content=png, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.post("/search", content=png, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert guarded.get("/health", headers={"Host": "evil.example"}).status_code == 400
        preflight = guarded.options("/search", headers={"Origin": "https://shop.example",
                                                        "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        follower = guarded.app.state.follower
        monkeypatch.setattr(follower.serving, "neighbours", lambda *a, **k: 1 / 0)
        broken = guarded.post("/search", content=png, headers={"Authorization": "Bearer s3cret"})
        assert broken.status_code == 500 and "Traceback" not in broken.text and "ZeroDivision" not in broken.text
        follower.stop()
    with client(published_home) as open_service:
        assert "access-control-allow-origin" not in open_service.options(
            "/search", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}).headers
        open_service.app.state.follower.stop()


def test_follows_new_releases_and_keeps_the_last_good_one(api, published_home, tmp_path):
    follower = api.app.state.follower
    first = follower.serving.release_id
    (published_home.incoming / "dress").mkdir(parents=True)
    query_png(tmp_path, 3, 5).rename(published_home.incoming / "dress" / "new.png")
    published = reindex(data_home=str(published_home.root), settle_seconds=0)["release_id"]
    follower.refresh()
    assert api.get("/health").json()["release_id"] == published != first
    published_home.latest.write_text("not-a-release-id\n")
    follower.refresh()
    health = api.get("/health").json()
    assert health["status"] == "degraded" and health["release_id"] == published and "not a release id" in health["problem"]
    assert api.post("/search", content=query_png(tmp_path).read_bytes()).status_code == 200


def test_search_cli_more_like_an_item(published_home):
    completed = subprocess.run([sys.executable, "-m", "ui.search", "--item", "3", "--item", "999999", "--k", "4"],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    first, missing = [json.loads(line) for line in completed.stdout.splitlines()]
    assert completed.returncode == 1  # one item is unknown
    assert first["item"] == 3 and len(first["neighbours"]) == 4 and 3 not in [n["item_id"] for n in first["neighbours"]]
    assert "no item 999999" in missing["error"]


def test_a_real_uvicorn_process_switches_releases_without_failing_a_request(published_home, tmp_path):
    port = free_port()
    env = {**os.environ, "FASHION_SIM_HOME": str(published_home.root), TOKEN_ENV: "t0ken"}
    server = subprocess.Popen([sys.executable, "-m", "ui.api", "--port", str(port), "--workers", "2"], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer t0ken"}
    try:
        wait_until_serving(base, server, timeout_s=120)
        png = query_png(tmp_path)
        expected = search_files(load_release(published_home), [png], 5)[0]
        answer = httpx.post(f"{base}/search?k=5", content=png.read_bytes(), headers=headers).json()
        assert [{k: v for k, v in n.items() if k != "image_url"} for n in answer["neighbours"]] == without_paths(expected)
        assert httpx.post(f"{base}/search", content=png.read_bytes()).status_code == 401
        assert httpx.get(f"{base}/health", headers={"Host": "evil.example"}).status_code == 400
        assert httpx.post(f"{base}/search", content=bytes(MAX_FILE_BYTES + 100 * 1024), headers=headers).status_code == 413

        failures, seen, stop = [], set(), threading.Event()

        def request_loop():
            with httpx.Client(base_url=base, headers=headers, timeout=30) as session:
                while not stop.is_set():
                    response = session.post("/search?k=3", content=png.read_bytes())
                    if response.status_code != 200:
                        failures.append(response.status_code)
                    else:
                        seen.add(response.json()["release_id"])

        loops = [threading.Thread(target=request_loop) for _ in range(3)]
        for loop in loops:
            loop.start()
        (published_home.incoming / "dress").mkdir(parents=True)
        query_png(tmp_path, 3, 6).rename(published_home.incoming / "dress" / "new.png")
        published = reindex(data_home=str(published_home.root), settle_seconds=0)["release_id"]
        deadline = time.monotonic() + 60
        while published not in seen and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # both workers have switched (each polls LATEST every second)
        stop.set()
        for loop in loops:
            loop.join()
        assert failures == [] and published in seen and len(seen) == 2
        metrics = httpx.get(f"{base}/metrics", headers=headers).text
        assert 'route="/search",status="200"' in metrics
    finally:
        server.terminate()
        server.wait(timeout=30)
