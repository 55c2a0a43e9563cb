"""The Kubernetes deployments, validated where no cluster runs: a real Prefect server on 127.0.0.1, a
kubernetes-type work pool created with flows/kubernetes.py's base job template, prefect.yaml's k8s-*
deployments deployed to it with `prefect deploy`, and the job manifest a Kubernetes worker would
submit for a run of each, rendered by prefect-kubernetes from the pool's template and the deployment's
job variables: image, CPU / memory / GPU resources, the store's environment and its Secret."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest
import yaml

from benchmarks.common import free_port
from flows.kubernetes import GPU_RESOURCE, POOL, STORE_SECRET, base_job_template
from flows.serve import PREFECT_YAML, deployment_specs
from tests.test_prefect_server import Processes, start_prefect_server

pytestmark = pytest.mark.server
STORE = "s3://shop-store/fashion-sim"
IMAGE = "registry.example/fashion-sim:2026.11"
DASK = "tcp://dask-scheduler.fashion-sim:8786"


def rendered_manifests(api_url: str) -> dict[str, tuple[dict, object]]:
    """name -> (the job manifest a worker of POOL submits for a new run of that deployment, the deployment)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    async def render() -> dict:
        rendered = {}
        async with get_client() as client:
            pool = await client.read_work_pool(POOL)
            assert pool.type == "kubernetes"
            for spec in deployment_specs(pool=POOL):
                flow_name = spec["entrypoint"].rsplit(":", 1)[1]
                deployment = await client.read_deployment_by_name(f"{flow_name}/{spec['name']}")
                flow_run = await client.create_flow_run_from_deployment(deployment.id)
                configuration = await KubernetesWorkerJobConfiguration.from_template_and_values(
                    pool.base_job_template, {**deployment.job_variables, **(flow_run.job_variables or {})})
                configuration.prepare_for_flow_run(flow_run, deployment=deployment, work_pool=pool)
                rendered[spec["name"]] = configuration.job_manifest, deployment
        return rendered

    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(render())


def test_kubernetes_deployments_render_the_jobs_they_declare(tmp_path):
    declared = deployment_specs(pool=POOL)
    assert {spec["name"] for spec in declared} == {"k8s-weekly", "k8s-nightly"}
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    template = tmp_path / "k8s-pool.json"
    template.write_text(json.dumps(base_job_template()))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api_url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_CLI_PROMPT": "false",
           "FASHION_SIM_IMAGE": IMAGE, "FASHION_SIM_HOME": STORE, "DASK_SCHEDULER_ADDRESS": DASK}
    processes = Processes(tmp_path, env)
    try:
        start_prefect_server(processes, port)
        processes.run("pool", "prefect", "work-pool", "create", POOL, "--type", "kubernetes",
                      "--base-job-template", str(template))
        processes.run("deploy", "prefect", "--no-prompt", "deploy", "--name", "k8s-*")
        rendered = rendered_manifests(api_url)
    finally:
        processes.stop_all()
        shutil.rmtree(tmp_path / "prefect-home", ignore_errors=True)

    assert set(rendered) == {spec["name"] for spec in declared}
    for name, (manifest, deployment) in rendered.items():
        pod = manifest["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert manifest["kind"] == "Job" and container["image"] == IMAGE, name
        # training is one task, placed by its deployment: a node with a GPU and room for the catalogue
        assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"},
                                          "limits": {"memory": "24Gi", GPU_RESOURCE: 1}}, name
        env = {entry["name"]: entry.get("value") for entry in container["env"]}
        assert env["FASHION_SIM_HOME"] == STORE and env["DASK_SCHEDULER_ADDRESS"] == DASK, env
        assert env["PREFECT__FLOW_RUN_ID"] and not any(key.startswith("AWS_") for key in env), env
        assert container["envFrom"] == [{"secretRef": {"name": STORE_SECRET}}]  # the store's keys, from a Secret
        assert pod["restartPolicy"] == "Never" and container["args"][:3] == ["prefect", "flow-run", "execute"]
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                                          {"directory": "/opt/fashion-sim"}}]  # the code is in the image
        assert deployment.work_pool_name == POOL and deployment.schedules, name
    # this machine's deployments are not the cluster's: serve and `make deploy` leave the k8s-* ones out
    local = {spec["name"] for spec in deployment_specs()}
    assert local and not local & set(rendered)
    assert {spec["name"] for spec in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]} == local | set(rendered)
