"""The base job template of the Kubernetes work pool that prefect.yaml's k8s-* deployments run on.

prefect-kubernetes' default template, plus the two job variables a cluster run of this project needs
and the default lacks: `gpu_limit` (nvidia.com/gpu, for the training deployments) and `store_secret`,
the Kubernetes Secret whose keys become the job's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
and AWS_ENDPOINT_URL / AWS_REGION when the store needs them), so the store's credentials are never
job variables that Prefect stores in clear. Its CPU and memory requests come from the default template.
`python -m flows.kubernetes > k8s-pool.json` writes it for `prefect work-pool create --base-job-template`
(`make k8s-pool`, README "Scale out"); tests/test_kubernetes.py checks the manifests it renders.
"""

from __future__ import annotations

import copy
import json

POOL = "fashion-sim-k8s"  # the work pool prefect.yaml's k8s-* deployments name
STORE_SECRET = "fashion-sim-store"  # the Secret with the store's AWS_* variables (README "Scale out")
GPU_RESOURCE = "nvidia.com/gpu"


def base_job_template() -> dict:
    """prefect-kubernetes' default base job template with `gpu_limit` and `store_secret` added."""
    from prefect_kubernetes.worker import KubernetesWorker

    template = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    template["variables"]["properties"].update({
        "gpu_limit": {"title": "GPU limit", "type": "integer",
                      "description": f"GPUs ({GPU_RESOURCE}) the job's pod gets; leave unset for none"},
        "store_secret": {"title": "Store secret", "type": "string", "default": STORE_SECRET,
                         "description": "Kubernetes Secret whose keys (the store's AWS_* variables) become the "
                                        "job's environment"},
    })
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"][GPU_RESOURCE] = "{{ gpu_limit }}"
    container["envFrom"] = [{"secretRef": {"name": "{{ store_secret }}"}}]
    return template


if __name__ == "__main__":
    print(json.dumps(base_job_template(), indent=2))
