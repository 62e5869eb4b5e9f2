"""Kubernetes placement through dagster-k8s's own code: step tags per launch path, Job manifests, strict schema validation.

No cluster is available here. What is real: the execution plans of the jobs
each launch path runs (schedule, drift sensor, UI/backfill asset selection),
dagster-k8s's parsing of the `dagster-k8s/config` step tags and its merge with
the executor's base config (`K8sContainerContext`, as its step handler does),
and `construct_dagster_k8s_job` building the Job each step would get. Every
manifest is validated against the Kubernetes 1.33 OpenAPI schemas in strict
mode. Not covered yet: the step handler launching Jobs against an emulated
API server (see the README's Kubernetes section).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import dagster as dg
import pytest

from ml_assets.k8s import K8S_CONFIG_TAG, Placement, base_step_config, gpu_step_config

K8S_VERSION = "1.33.0"


def _plan_step_tags(job: dg.JobDefinition, asset_selection: set[dg.AssetKey] | None = None) -> dict[str, dict[str, str]]:
    from dagster._core.execution.api import create_execution_plan

    if asset_selection is not None:
        job = job.get_subset(asset_selection=asset_selection)
    plan = create_execution_plan(job)
    return {step.key: dict(step.tags) for step in plan.steps}


def _manifest(step_key: str, tags: dict[str, str]) -> dict[str, Any]:
    """The Job dagster-k8s's step handler would create for this step (same merge, same constructor)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
    from kubernetes.client import ApiClient

    context = K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(base_step_config())).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags))
    )
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image="registry.example.com/churn:1.0", dagster_home="/opt/dagster/dagster_home", instance_config_map="dagster-instance"),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{step_key.replace('_', '-')}",
        pod_name=f"dagster-step-{step_key.replace('_', '-')}",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/op": step_key},
    )
    return ApiClient().sanitize_for_serialization(job)


def _validate(manifest: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


LAUNCH_PATHS = ["schedule: weekly_training_schedule", "sensor: drift_retraining_sensor", "UI or backfill: asset selection"]


@pytest.mark.parametrize("path", LAUNCH_PATHS)
def test_only_the_training_pod_asks_for_a_gpu_however_the_run_starts(path: str) -> None:
    from ml_assets.definitions import defs

    if path.startswith("schedule"):
        schedule = next(s for s in defs.schedules if s.name == "weekly_training_schedule")
        job = defs.resolve_job_def(schedule.job_name)
        tags = _plan_step_tags(job)
    elif path.startswith("sensor"):
        # The drift sensor requests training_job (tests in test_sensors.py show the request itself).
        tags = _plan_step_tags(defs.resolve_job_def("training_job"))
    else:
        job = defs.resolve_implicit_global_asset_job_def()
        tags = _plan_step_tags(job, {dg.AssetKey(k) for k in ("training_set", "lgbm_model", "torch_model")})
    assert "torch_model" in tags
    for step_key, step_tags in tags.items():
        manifest = _manifest(step_key, step_tags)
        _validate(manifest)
        pod = _pod(manifest)
        container = pod["containers"][0]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        if step_key == "torch_model":
            assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1", step_key
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            assert manifest["spec"]["template"]["metadata"]["labels"]["churn.ml/compute"] == "gpu"
        else:
            assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in requests, step_key
            assert "nodeSelector" not in pod and "tolerations" not in pod, step_key
        # Safe by default, every pod.
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert [v["name"] for v in pod["volumes"]].count("tmp") == 1  # merged, not duplicated
        assert limits["cpu"] and limits["memory"] and requests["cpu"] and requests["memory"]


def test_strict_validation_can_fail() -> None:
    import kubernetes_validate

    manifest = _manifest("torch_model", {K8S_CONFIG_TAG: __import__("json").dumps(gpu_step_config())})
    manifest["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_placement_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_K8S_GPU_COUNT", "2")
    monkeypatch.setenv("CHURN_K8S_GPU_NODE_SELECTOR", '{"cloud.google.com/gke-accelerator": "nvidia-l4"}')
    monkeypatch.setenv("CHURN_K8S_GPU_TOLERATIONS", '[{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]')
    config = gpu_step_config()
    assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert config["pod_spec_config"]["node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert config["pod_spec_config"]["tolerations"][0]["value"] == "yes"
    monkeypatch.setenv("CHURN_K8S_GPU_COUNT", "0")
    with pytest.raises(ValueError, match="at least 1"):
        Placement.from_env()
    monkeypatch.setenv("CHURN_K8S_GPU_COUNT", "1")
    monkeypatch.setenv("CHURN_K8S_GPU_NODE_SELECTOR", "{not json")
    with pytest.raises(ValueError, match="must be JSON"):
        Placement.from_env()


# --- A scheduling simulation (a model of the scheduler's filters, not Kubernetes itself) ---


def _fits(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    """Node selector, taints/tolerations (NoSchedule) and extended resources, as kube-scheduler filters them."""
    if any(node["labels"].get(k) != v for k, v in pod.get("nodeSelector", {}).items()):
        return False
    tolerations = pod.get("tolerations", [])

    def tolerated(taint: dict[str, str]) -> bool:
        return any(
            t.get("key") == taint["key"]
            and t.get("effect", taint["effect"]) == taint["effect"]
            and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
            for t in tolerations
        )

    if not all(tolerated(t) for t in node["taints"] if t["effect"] == "NoSchedule"):
        return False
    wanted = pod["containers"][0]["resources"]["requests"].get("nvidia.com/gpu")
    return not wanted or int(wanted) <= node["allocatable"].get("nvidia.com/gpu", 0)


NODES = [
    {"name": "cpu-a", "labels": {}, "taints": [], "allocatable": {}},
    {"name": "cpu-b", "labels": {"pool": "batch"}, "taints": [], "allocatable": {}},
    {
        "name": "gpu-a",
        "labels": {"nvidia.com/gpu.present": "true"},
        "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
        "allocatable": {"nvidia.com/gpu": 1},
    },
    {"name": "gpu-untainted-label-missing", "labels": {}, "taints": [], "allocatable": {"nvidia.com/gpu": 4}},
]


def test_scheduling_simulation_gpu_pod_lands_only_on_gpu_nodes_and_cpu_pods_only_on_cpu_nodes() -> None:
    from ml_assets.definitions import defs

    tags = _plan_step_tags(defs.resolve_job_def("training_job"))
    for step_key, step_tags in tags.items():
        pod = _pod(_manifest(step_key, step_tags))
        fits = {n["name"] for n in NODES if _fits(pod, n)}
        if step_key == "torch_model":
            assert fits == {"gpu-a"}, fits
        else:
            # CPU pods never tolerate the GPU taint, so GPU nodes stay free for GPU work.
            assert fits == {"cpu-a", "cpu-b", "gpu-untainted-label-missing"}, (step_key, fits)
    # A 2-GPU request does not fit a 1-GPU node.
    two = _pod(_manifest("torch_model", {K8S_CONFIG_TAG: __import__("json").dumps(gpu_step_config(Placement(gpu_count=2)))}))
    assert not any(_fits(two, n) for n in NODES if n["name"] == "gpu-a")


def test_local_mode_does_not_import_dagster_k8s_and_kubernetes_mode_uses_the_k8s_executor() -> None:
    code = (
        "import sys, json; from ml_assets.definitions import defs; "
        "print(json.dumps({'k8s': 'dagster_k8s' in sys.modules, 'executor': defs.resolve_job_def('training_job').executor_def.name}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CHURN_DEPLOYMENT"}
    local = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, check=True)
    assert '"k8s": false' in local.stdout and '"executor": "in_process"' in local.stdout
    k8s = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env={**env, "CHURN_DEPLOYMENT": "kubernetes"}, check=True
    )
    assert '"k8s": true' in k8s.stdout and '"executor": "churn_k8s_job_executor"' in k8s.stdout
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "CHURN_DEPLOYMENT": "cloud"})
    assert bad.returncode != 0 and "local or kubernetes" in bad.stderr
