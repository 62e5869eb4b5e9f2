"""Kubernetes placement of steps: the `dagster-k8s/config` each kind of step gets (no dagster_k8s import here).

Read by the k8s_job_executor's step handler from each step's *op* tags, so it
holds however a run starts (UI, schedule, sensor, backfill): op tags travel
with the step, where asset- or run-level tags do not reach step pods
(dagster-k8s builds step pods with `include_run_tags=False`).

Values come from the environment, not literals in assets:

| variable | default |
|---|---|
| `CHURN_K8S_GPU_COUNT` | `1` |
| `CHURN_K8S_GPU_RESOURCE` | `nvidia.com/gpu` |
| `CHURN_K8S_GPU_NODE_SELECTOR` | `{"nvidia.com/gpu.present": "true"}` (JSON) |
| `CHURN_K8S_GPU_TOLERATIONS` | `[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]` (JSON) |
| `CHURN_K8S_GPU_CPU` / `CHURN_K8S_GPU_MEMORY` | `2` / `8Gi` (requests = limits) |
| `CHURN_K8S_CPU_CPU` / `CHURN_K8S_CPU_MEMORY` | `1` / `4Gi` requests; limits `2` / `8Gi` (`..._LIMIT_CPU`, `..._LIMIT_MEMORY`) |
| `CHURN_K8S_RUN_AS_USER` | `10001` (the image's non-root user) |
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

K8S_CONFIG_TAG = "dagster-k8s/config"


def _json_env(name: str, default: Any) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be JSON: {exc}") from exc


@dataclass(frozen=True)
class Placement:
    gpu_count: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    gpu_tolerations: list[dict[str, str]] = field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    gpu_cpu: str = "2"
    gpu_memory: str = "8Gi"
    cpu_cpu: str = "1"
    cpu_memory: str = "4Gi"
    cpu_limit_cpu: str = "2"
    cpu_limit_memory: str = "8Gi"
    run_as_user: int = 10001

    @classmethod
    def from_env(cls) -> Placement:
        d = cls()
        env = os.environ.get
        gpu_count = int(env("CHURN_K8S_GPU_COUNT", str(d.gpu_count)))
        if gpu_count < 1:
            raise ValueError("CHURN_K8S_GPU_COUNT must be at least 1 (the GPU step needs a GPU; use device=cpu to train without one)")
        return cls(
            gpu_count=gpu_count,
            gpu_resource=env("CHURN_K8S_GPU_RESOURCE", d.gpu_resource),
            gpu_node_selector=_json_env("CHURN_K8S_GPU_NODE_SELECTOR", d.gpu_node_selector),
            gpu_tolerations=_json_env("CHURN_K8S_GPU_TOLERATIONS", d.gpu_tolerations),
            gpu_cpu=env("CHURN_K8S_GPU_CPU", d.gpu_cpu),
            gpu_memory=env("CHURN_K8S_GPU_MEMORY", d.gpu_memory),
            cpu_cpu=env("CHURN_K8S_CPU_CPU", d.cpu_cpu),
            cpu_memory=env("CHURN_K8S_CPU_MEMORY", d.cpu_memory),
            cpu_limit_cpu=env("CHURN_K8S_CPU_LIMIT_CPU", d.cpu_limit_cpu),
            cpu_limit_memory=env("CHURN_K8S_CPU_LIMIT_MEMORY", d.cpu_limit_memory),
            run_as_user=int(env("CHURN_K8S_RUN_AS_USER", str(d.run_as_user))),
        )


def _security(run_as_user: int) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {"run_as_non_root": True, "run_as_user": run_as_user, "run_as_group": run_as_user, "fs_group": run_as_user, "seccomp_profile": {"type": "RuntimeDefault"}}
    container = {
        "allow_privilege_escalation": False,
        "privileged": False,
        # The code never writes inside the image; scratch space is the /tmp emptyDir below.
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def base_step_config(placement: Placement | None = None) -> dict[str, Any]:
    """Every step pod (the executor's `step_k8s_config`): non-root, no privilege escalation, read-only root
    filesystem with an emptyDir on /tmp, CPU and memory requests and limits, no GPU."""
    p = placement or Placement.from_env()
    pod_security, container_security = _security(p.run_as_user)
    return {
        "container_config": {
            "resources": {"requests": {"cpu": p.cpu_cpu, "memory": p.cpu_memory}, "limits": {"cpu": p.cpu_limit_cpu, "memory": p.cpu_limit_memory}},
            "security_context": container_security,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],  # noqa: S108 (a path inside the pod: a private emptyDir, the only writable place under a read-only root)
        },
        "pod_spec_config": {"security_context": pod_security, "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "4Gi"}}]},
        "pod_template_spec_metadata": {"labels": {"churn.ml/compute": "cpu"}},
    }


def gpu_step_config(placement: Placement | None = None) -> dict[str, Any]:
    """What a GPU step adds on top of the base (merged by dagster-k8s): GPU requests and limits, bigger CPU and
    memory, the GPU node selector and tolerations."""
    p = placement or Placement.from_env()
    sized = {"cpu": p.gpu_cpu, "memory": p.gpu_memory, p.gpu_resource: str(p.gpu_count)}
    return {
        "container_config": {"resources": {"requests": dict(sized), "limits": dict(sized)}},
        "pod_spec_config": {"node_selector": dict(p.gpu_node_selector), "tolerations": [dict(t) for t in p.gpu_tolerations]},
        "pod_template_spec_metadata": {"labels": {"churn.ml/compute": "gpu"}},
    }


def step_tags(compute: str) -> dict[str, Any]:
    """Op tags for a step of this compute kind. CPU steps need none beyond the executor's base config."""
    if compute == "gpu":
        return {K8S_CONFIG_TAG: gpu_step_config(), "ml/compute": "gpu"}
    if compute == "cpu":
        return {"ml/compute": "cpu"}
    raise ValueError(f"compute must be gpu or cpu, not {compute!r}")


def executor_config() -> dict[str, Any]:
    """The k8s_job_executor's config in production (definitions.build_executor); tests use the same."""
    return {"step_k8s_config": base_step_config(), "max_concurrent": int(os.environ.get("CHURN_K8S_MAX_CONCURRENT", "4"))}
