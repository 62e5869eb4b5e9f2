"""Kubernetes placement of steps: the `dagster-k8s/config` each kind of step gets (no dagster_k8s import here).

Read by the k8s_job_executor's step handler from each step's *op* tags, so it
holds however a run starts (UI, schedule, sensor, backfill): op tags travel
with the step, where asset- or run-level tags do not reach step pods
(dagster-k8s builds step pods with `include_run_tags=False`).

Values come from the settings (`deployment.k8s`, variables `CHURN_K8S_*`; the
table is in docs/operations.md), not literals in assets.
"""

from __future__ import annotations

from typing import Any

from lib.settings import Kubernetes, settings

K8S_CONFIG_TAG = "dagster-k8s/config"


# The placement is the `deployment.k8s` section of the settings.
Placement = Kubernetes


def _placement(placement: Placement | None) -> Placement:
    return placement if placement is not None else settings().deployment.k8s


def _security(run_as_user: int) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {
        "run_as_non_root": True,
        "run_as_user": run_as_user,
        "run_as_group": run_as_user,
        "fs_group": run_as_user,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }
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
    p = _placement(placement)
    pod_security, container_security = _security(p.run_as_user)
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": p.cpu_cpu, "memory": p.cpu_memory},
                "limits": {"cpu": p.cpu_limit_cpu, "memory": p.cpu_limit_memory},
            },
            "security_context": container_security,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],  # noqa: S108 (a path inside the pod: a private emptyDir, the only writable place under a read-only root)
        },
        "pod_spec_config": {
            "security_context": pod_security,
            "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "4Gi"}}],
            # A step computes; it never calls the Kubernetes API (the run pod's executor launches the steps).
            "automount_service_account_token": False,
        },
        "pod_template_spec_metadata": {"labels": {"churn.ml/compute": "cpu"}},
        # Read by the policy scan (ml_assets_tests/system/test_policy.py): the one deliberate exception, with its reason.
        "job_metadata": {
            "annotations": {
                "checkov.io/skip1": "CKV_K8S_35=dagster-k8s passes the run's env_secrets (churn-secrets) to step pods as environment "
                "variables; the code reads its settings from the environment only"
            }
        },
    }


def gpu_step_config(placement: Placement | None = None) -> dict[str, Any]:
    """What a GPU step adds on top of the base (merged by dagster-k8s): GPU requests and limits, bigger CPU and
    memory, the GPU node selector and tolerations."""
    p = _placement(placement)
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


def executor_config(placement: Placement | None = None) -> dict[str, Any]:
    """The k8s_job_executor's config in production (definitions.build_executor); tests use the same."""
    p = _placement(placement)
    return {"step_k8s_config": base_step_config(p), "max_concurrent": p.max_concurrent}
