"""Serve every deployment of prefect.yaml, with its schedules, from this one process (no worker).

prefect.yaml stays the single place where deployments and schedules are declared: this reads it
and hands the same names, entrypoints, schedules and concurrency limits to Prefect's `serve()`.
Needs a Prefect server (PREFECT_API_URL); `make up` starts one on 127.0.0.1 and this with it.
Runs execute in subprocesses started from the current directory, which must be the repository root.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from storage.runtime import add_verbose_flag, parse_command_line

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"
LOCAL_POOL = "fashion-sim"  # the process work pool of this machine's deployments (the k8s-* ones: flows/kubernetes.py)


def deployment_specs(path: Path = PREFECT_YAML, pool: str = LOCAL_POOL) -> list[dict]:
    """The deployments of prefect.yaml on work pool `pool`: this machine's, unless told otherwise."""
    return [spec for spec in yaml.safe_load(Path(path).read_text())["deployments"] if spec["work_pool"]["name"] == pool]


def deploy_arguments() -> list[str]:
    """`prefect deploy`'s arguments for this machine's deployments: `--all` would deploy the k8s-* ones too."""
    return [argument for spec in deployment_specs() for argument in ("--name", spec["name"])]


def to_schedule(entry: dict):
    """A prefect.yaml schedule entry (cron or interval in seconds, plus options) as a Schedule."""
    from prefect.schedules import Schedule

    entry = dict(entry)
    if "interval" in entry:
        entry["interval"] = datetime.timedelta(seconds=float(entry["interval"]))
    return Schedule(**entry)


def runner_deployments(specs: list[dict], only: list[str] | None = None) -> list:
    """`flow.to_deployment(...)` for each spec (those named in `only`, when given)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.flows import load_flow_from_entrypoint

    chosen = [spec for spec in specs if not only or spec["name"] in only]
    unknown = set(only or ()) - {spec["name"] for spec in specs}
    if unknown:
        raise SystemExit(f"no deployment named {sorted(unknown)} in prefect.yaml; "
                         f"choose from {[spec['name'] for spec in specs]}")
    deployments = []
    for spec in chosen:
        limit = spec.get("concurrency_limit")
        deployments.append(load_flow_from_entrypoint(spec["entrypoint"]).to_deployment(
            name=spec["name"], description=spec.get("description"), tags=spec.get("tags"),
            parameters=spec.get("parameters") or {},
            schedules=[to_schedule(entry) for entry in spec.get("schedules") or []],
            concurrency_limit=ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit,
        ))
    return deployments


def drop_worker_deployments(deployments: list) -> None:
    """Delete same-named deployments that `prefect deploy` made for a worker (they carry pull steps):
    serve() would update them in place but keep their worker-only code location, and its runs
    would fail to load the flow. `prefect deploy --all` recreates them whenever wanted."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for deployment in deployments:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                existing = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if existing.pull_steps:
                print(f"replacing worker deployment {name} by a served one", file=sys.stderr)
                client.delete_deployment(existing.id)


def wait_for_server(api_url: str, timeout_s: float) -> None:
    """Poll <api_url>/health until the server answers, or stop with a clear message."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no Prefect server answered at {api_url} within {timeout_s:.0f} s; "
                             "start one with `prefect server start --host 127.0.0.1` (or `make up`)")
        time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="serve only this deployment of prefect.yaml (repeatable; default: all)")
    parser.add_argument("--wait-for-server", type=float, default=0, metavar="SECONDS",
                        help="first wait up to this long for the server at PREFECT_API_URL to answer")
    parser.add_argument("--limit", type=int, default=None, help="most flow runs executing at once")
    parser.add_argument("--names", action="store_true",
                        help="print `--name NAME` for each deployment it serves (what `make deploy` deploys) and stop")
    add_verbose_flag(parser)  # the runs inherit it (FASHION_SIM_VERBOSE)
    args = parse_command_line(parser, argv)
    if args.names:
        print(" ".join(deploy_arguments()))
        return
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise SystemExit("PREFECT_API_URL is not set: schedules need a Prefect server. Start one with "
                         "`prefect server start --host 127.0.0.1` and export "
                         "PREFECT_API_URL=http://127.0.0.1:4200/api, or run `make up`.")
    if args.wait_for_server:
        wait_for_server(api_url, args.wait_for_server)
    from prefect import serve

    deployments = runner_deployments(deployment_specs(), args.only)
    drop_worker_deployments(deployments)
    print(f"serving {', '.join(f'{d.flow_name}/{d.name}' for d in deployments)} from {api_url}",
          file=sys.stderr)
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
