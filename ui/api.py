"""The search service: `python -m ui.api [--host H] [--port P] [--workers N] [--token T] ...`.

FastAPI on uvicorn, for a shop's own programs. Routes (the OpenAPI page is /docs):

    POST /search?k=K[&label=NAME]       an image as the body (any image type) or a multipart field `file`
    GET  /items/{id}/similar?k=K[&label=NAME]   more like a catalogue item (the item itself left out)
    GET  /items/{id}                    an item's label, source and metadata
    GET  /items/{id}/image              its display copy (photos: JPEG) or its pixels (PNG)
    GET  /health                        the release served, items, uptime; 503 while none can be
    GET  /metrics                       Prometheus text: requests and latency by route and status, the release

Neighbours are those `python -m ui.search` prints (same ranks, distances, labels, metadata), with an
`image_url` instead of a local path. Each process follows LATEST (ReleaseFollower): a new release is
loaded beside the one serving and swapped in whole, so a request in flight finishes on the release it
started with; a release that cannot be loaded leaves the last good one serving, and /health says so.
Errors are one line in `detail`, never a traceback: 400 a bad image (the CLI's reason), 413 past the
page's size limits, 404 an unknown item, 422 bad parameters, 401 a missing or wrong token. The
service only reads the store.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from storage.errors import UserError
from storage.home import DataHome
from storage.images import MAX_FILE_BYTES, ImageRejected, ImageTooLarge, normalise_image
from storage.match_score import match_fields
from storage.releases import Neighbour, Release, latest_release_id, load_release
from storage.runtime import add_verbose_flag, parse_command_line, verbose

TOKEN_ENV = "FASHION_SIM_API_TOKEN"
HOSTS_ENV = "FASHION_SIM_API_HOSTS"  # comma-separated Host header values accepted (set by main for workers)
CORS_ENV = "FASHION_SIM_API_CORS"  # comma-separated origins allowed by CORS; empty: CORS off
DEFAULT_PORT = 8000
MAX_K = 100
FOLLOW_POLL_S = 1.0  # how often each process looks at LATEST
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and headers around the file field
log = logging.getLogger("fashion_sim.api")


class ReleaseFollower:
    """The release this process serves, following LATEST from a background thread (see the module
    docstring). `problem` is why the newest release is not the one serving (None when it is)."""

    def __init__(self, home: DataHome, poll_s: float = FOLLOW_POLL_S):
        self.home, self.poll_s = home, poll_s
        self.serving: Release | None = None
        self.problem: str | None = None
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="release-follower", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """Load the release LATEST names when it is not the one serving; keep serving the last good one
        when it cannot be loaded."""
        try:
            wanted = latest_release_id(self.home)
            if wanted is None:
                raise UserError(f"no release is published in {self.home.location} (LATEST is missing)")
            if self.serving is not None and self.serving.release_id == wanted:
                self.problem = None
                return
            release = load_release(self.home, wanted)
            release.embed(np.zeros((1, *release.dataset.pixel_shape), np.uint8))  # load the embedder before serving
        except Exception as error:  # noqa: BLE001 - whatever is wrong with the store, keep serving
            problem = " ".join(str(error).split())[:300]
            if problem != self.problem:
                log.warning("release not switched: %s", problem)
            self.problem = problem
            return
        self.serving, self.problem = release, None
        log.info("serving release %s (%d items)", release.release_id, len(release.items))

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()


class NeighbourOut(BaseModel):
    rank: int
    item_id: int
    label: int
    label_name: str
    distance: float
    image_url: str
    metadata: dict[str, str] | None = None


class SearchOut(BaseModel):
    release_id: str
    no_match: bool  # match == "none", as answered before the bands
    match: str  # "good", "weak" or "none" (no close match): storage/match_score.py
    neighbours: list[NeighbourOut]


class ItemOut(BaseModel):
    item_id: int
    label: int
    label_name: str
    source: str
    image_url: str
    release_id: str
    metadata: dict[str, str] | None = None


class HealthOut(BaseModel):
    status: str  # "ok", "degraded" (serving, but the newest release could not be loaded), "unavailable"
    release_id: str | None
    items: int
    uptime_s: float
    problem: str | None = None


@dataclass(frozen=True)
class ServiceSettings:
    home: DataHome
    token: str = ""
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls) -> "ServiceSettings":
        hosts = tuple(h for h in os.environ.get(HOSTS_ENV, "").split(",") if h) or cls.allowed_hosts
        origins = tuple(o for o in os.environ.get(CORS_ENV, "").split(",") if o)
        return cls(DataHome.from_env(), os.environ.get(TOKEN_ENV, ""), hosts, origins)


class Metrics:
    """Prometheus metrics of this app: its own registry, or every worker's files in multiprocess mode."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        shared = {} if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else {"registry": self.registry}
        self.requests = Counter("fashion_sim_requests", "HTTP requests by route and status", ["route", "status"],
                                **shared)
        self.latency = Histogram("fashion_sim_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5), **shared)
        self.items = Gauge("fashion_sim_release_items", "items in the release served", ["release_id"],
                           multiprocess_mode="liveall", **shared)

    def text(self) -> bytes:
        from prometheus_client import generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def create_app(settings: ServiceSettings, follower: ReleaseFollower | None = None) -> FastAPI:
    """The service over `settings.home`; `follower` defaults to one that starts following LATEST now."""
    follower = follower or ReleaseFollower(settings.home)
    started = time.monotonic()
    metrics = Metrics()
    app = FastAPI(title="Fashion similarity search", version="1",
                  description="Similar items for an uploaded image or a catalogue item (see README \"Service\").")
    app.state.follower = follower
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.token and (credentials is None or not hmac.compare_digest(
                credentials.credentials.encode(), settings.token.encode())):
            raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def measure(request: Request, call_next):
        begun = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - begun)
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse({"detail": "internal error; the service's log has the details"}, status_code=500)

    def serving() -> Release:
        release = follower.serving
        if release is None:
            raise HTTPException(503, follower.problem or "no release is loaded yet")
        return release

    def label_index(release: Release, name: str | None) -> int | None:
        if name is None:
            return None
        found = release.dataset.class_index(name)
        if found is None:
            raise HTTPException(422, f"unknown label {name!r}; use one of: {', '.join(release.dataset.class_names)}")
        return found

    def answer(release: Release, neighbours: list[Neighbour], band: str) -> dict:
        return {"release_id": release.release_id, **match_fields(band),
                "neighbours": [{**{key: value for key, value in n.as_dict().items() if key != "path"},
                                "image_url": f"/items/{n.item_id}/image"} for n in neighbours]}

    def item_row(release: Release, item_id: int) -> int:
        try:
            return release.row_of(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id} in release {release.release_id}") from None

    @app.post("/search", response_model=SearchOut, response_model_exclude_none=True,
              dependencies=[Depends(authorised)])
    async def search(request: Request, k: int = Query(10, ge=1, le=MAX_K),
                     label: str | None = Query(None, description="only items of this class")) -> dict:
        """The k nearest catalogue items of an image: the request body (any image content type) or a
        multipart file field named `file`."""
        data = await image_body(request)
        release = serving()
        wanted = label_index(release, label)

        def run() -> dict:
            try:
                image = normalise_image(data, release.dataset)
            except ImageTooLarge as error:
                raise HTTPException(413, str(error)) from None
            except ImageRejected as error:
                raise HTTPException(400, str(error)) from None
            embedding = release.embed(image.pixels[None])
            neighbours = release.neighbours(embedding, k, wanted)[0]
            return answer(release, neighbours, release.match_band(image.pixels, embedding[0], neighbours))

        return await run_in_threadpool(run)

    @app.get("/items/{item_id}/similar", response_model=SearchOut, response_model_exclude_none=True,
             dependencies=[Depends(authorised)])
    def similar(item_id: int, k: int = Query(10, ge=1, le=MAX_K),
                label: str | None = Query(None, description="only items of this class")) -> dict:
        """More like catalogue item `item_id` (the item itself left out)."""
        release = serving()
        row = item_row(release, item_id)
        neighbours = release.similar(item_id, k, label_index(release, label))[0]
        return answer(release, neighbours, release.match_band(release.items.images[row], release.embeddings[row],
                                                              neighbours))

    @app.get("/items/{item_id}", response_model=ItemOut, response_model_exclude_none=True,
             dependencies=[Depends(authorised)])
    def item(item_id: int) -> dict:
        release = serving()
        row = item_row(release, item_id)
        items = release.items
        return {"item_id": item_id, "label": int(items.labels[row]),
                "label_name": release.dataset.label_name(int(items.labels[row])), "source": str(items.sources[row]),
                "image_url": f"/items/{item_id}/image", "release_id": release.release_id,
                "metadata": items.item_metadata(row) or None}

    @app.get("/items/{item_id}/image", dependencies=[Depends(authorised)],
             responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
    def item_image(item_id: int) -> Response:
        """The item's display copy as stored (a photo's JPEG), else its pixels as a PNG."""
        release = serving()
        data, kind = release.picture_file(item_row(release, item_id))
        # an item id never changes its picture
        return Response(data, media_type=f"image/{kind}", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/health", response_model=HealthOut, response_model_exclude_none=True)
    def health() -> JSONResponse:
        release = follower.serving
        status = "unavailable" if release is None else "degraded" if follower.problem else "ok"
        body = {"status": status, "release_id": release.release_id if release else None,
                "items": len(release.items) if release else 0, "uptime_s": round(time.monotonic() - started, 1),
                "problem": follower.problem}
        return JSONResponse({k: v for k, v in body.items() if v is not None or k == "release_id"},
                            status_code=503 if release is None else 200)

    @app.get("/metrics", dependencies=[Depends(authorised)], response_class=Response)
    def prometheus() -> Response:
        release = follower.serving
        if release is not None:
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # not implemented there: each pid's series stay
                metrics.items.clear()
            metrics.items.labels(release.release_id).set(len(release.items))
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    return app


async def image_body(request: Request) -> bytes:
    """The uploaded image: a multipart field `file`, else the body; 413 past MAX_FILE_BYTES, counted
    while it arrives (a client that lies in Content-Length is stopped too)."""
    limit = MAX_FILE_BYTES + MULTIPART_OVERHEAD
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"the upload is {int(length) / 2**20:.1f} MB, above the "
                                 f"{MAX_FILE_BYTES / 2**20:.0f} MB limit; resize the image first")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the upload is above the {MAX_FILE_BYTES / 2**20:.0f} MB limit; "
                                     "resize the image first")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _multipart_file(request, body)
    return body


async def _multipart_file(request: Request, body: bytes) -> bytes:
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=10,
                                     max_part_size=MAX_FILE_BYTES + 1).parse()
    except MultiPartException as error:
        raise HTTPException(400, f"the multipart body cannot be read ({error})") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "send the image as the request body, or as a multipart file field named `file`")
    return await upload.read()


def app_from_environment() -> FastAPI:
    """The app for uvicorn's workers (`--workers N`): its settings come from the environment main() set."""
    logging.basicConfig(level=logging.INFO if verbose() else logging.WARNING, format="%(message)s")
    return create_app(ServiceSettings.from_environment())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--workers", type=int, default=1, help="processes answering requests (default 1)")
    parser.add_argument("--data-home", default="", help="data home (default $FASHION_SIM_HOME, else ./data)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV, ""),
                        help=f"bearer token every route but /health requires (default ${TOKEN_ENV}; none: open)")
    parser.add_argument("--allowed-host", action="append", default=[],
                        help="a Host header value to accept besides the bound address and localhost (repeatable); "
                             "needed behind a load balancer that keeps the public host name")
    parser.add_argument("--cors-origin", action="append", default=[],
                        help="an origin whose web pages may call the service (repeatable; default: CORS off)")
    add_verbose_flag(parser)
    args = parse_command_line(parser, argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    home = DataHome.from_env(args.data_home or None)
    hosts = {"127.0.0.1", "localhost", *args.allowed_host}
    if args.host in ("0.0.0.0", "::"):
        if not args.allowed_host:
            print(f"warning: bound to {args.host} without --allowed-host: any Host header is accepted",
                  file=sys.stderr)
            hosts = {"*"}
    else:
        hosts.add(args.host)
    os.environ.update({"FASHION_SIM_HOME": home.location, TOKEN_ENV: args.token, HOSTS_ENV: ",".join(sorted(hosts)),
                       CORS_ENV: ",".join(args.cors_origin)})
    if args.workers > 1:  # every worker's counters in one /metrics answer (prometheus_client's multiprocess mode)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fashion-sim-metrics-")
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    print(f"serving {home.location} on http://{args.host}:{args.port} ({args.workers} worker(s); API docs at /docs)",
          file=sys.stderr)
    config = uvicorn.Config("ui.api:app_from_environment", factory=True, host=args.host, port=args.port,
                            workers=args.workers, log_level="info" if verbose() else "warning", access_log=verbose())
    if args.workers == 1:
        uvicorn.Server(config).run()
    else:
        Multiprocess(config, sockets=[tcp_listener(args.host, args.port)]).run()
    return 0


def tcp_listener(host: str, port: int) -> socket.socket:
    """The listening socket the workers share, made as uvicorn makes it but with its protocol named:
    asyncio sets TCP_NODELAY only on connections of a socket whose proto is IPPROTO_TCP, and uvicorn's
    own (proto 0) left every keep-alive request of a worker waiting ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.set_inheritable(True)
    return listener


if __name__ == "__main__":
    raise SystemExit(main())
