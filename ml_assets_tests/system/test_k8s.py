"""Kubernetes placement through dagster-k8s's own code: step tags per launch path, Job manifests, strict schema validation.

No cluster is available here. What is real: the execution plans of the jobs
each launch path runs (schedule, drift sensor, UI/backfill asset selection),
dagster-k8s's parsing of the `dagster-k8s/config` step tags and its merge with
the executor's base config (`K8sContainerContext`, as its step handler does),
and `construct_dagster_k8s_job` building the Job each step would get. Every
manifest is validated against the Kubernetes 1.33 OpenAPI schemas in strict
mode. And end to end through the executor: the `k8s_job_executor`'s own step
handler launches every step of real jobs, and `K8sRunLauncher` launches the
run, with the real kubernetes client against kmock's in-memory Kubernetes API
emulator on 127.0.0.1; the Job objects are read back through the API.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from ml_assets.k8s import K8S_CONFIG_TAG, Placement, base_step_config, executor_config, gpu_step_config

K8S_VERSION = "1.33.0"


def _plan_step_tags(job: dg.JobDefinition, asset_selection: set[dg.AssetKey] | None = None) -> dict[str, dict[str, str]]:
    from dagster._core.execution.api import create_execution_plan

    if asset_selection is not None:
        job = job.get_subset(asset_selection=asset_selection)
    plan = create_execution_plan(job)
    return {step.key: dict(step.tags) for step in plan.steps}


def _manifest(step_key: str, tags: dict[str, str], image: str = "registry.example.com/churn:1.0") -> dict[str, Any]:
    """The Job dagster-k8s's step handler would create for this step (same merge, same constructor)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
    from kubernetes.client import ApiClient

    context = K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(base_step_config())).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags))
    )
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image=image,
            dagster_home="/opt/dagster/dagster_home",
            instance_config_map="dagster-instance",
            image_pull_policy="Always",
            env_secrets=["churn-secrets"],
        ),
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
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # noqa: S108 (a path inside the pod)
        assert [v["name"] for v in pod["volumes"]].count("tmp") == 1  # merged, not duplicated
        assert limits["cpu"] and limits["memory"] and requests["cpu"] and requests["memory"]


def test_strict_validation_can_fail() -> None:
    import kubernetes_validate

    manifest = _manifest("torch_model", {K8S_CONFIG_TAG: json.dumps(gpu_step_config())})
    manifest["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_placement_values_come_from_the_environment() -> None:
    from lib.settings import SettingsError, load_settings

    env = {
        "CHURN_SETTINGS_FILE": "none",
        "CHURN_K8S_GPU_COUNT": "2",
        "CHURN_K8S_GPU_NODE_SELECTOR": '{"cloud.google.com/gke-accelerator": "nvidia-l4"}',
        "CHURN_K8S_GPU_TOLERATIONS": '[{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]',
        "CHURN_K8S_MAX_CONCURRENT": "7",
    }
    placement = load_settings(env).deployment.k8s
    config = gpu_step_config(placement)
    assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert config["pod_spec_config"]["node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert config["pod_spec_config"]["tolerations"][0]["value"] == "yes"
    assert executor_config(placement)["max_concurrent"] == 7
    with pytest.raises(SettingsError, match="CHURN_K8S_GPU_COUNT.*greater than or equal to 1"):
        load_settings({**env, "CHURN_K8S_GPU_COUNT": "0"})
    with pytest.raises(SettingsError, match="CHURN_K8S_GPU_NODE_SELECTOR is not valid JSON"):
        load_settings({**env, "CHURN_K8S_GPU_NODE_SELECTOR": "{not json"})


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
    two = _pod(_manifest("torch_model", {K8S_CONFIG_TAG: json.dumps(gpu_step_config(Placement(gpu_count=2)))}))
    assert not any(_fits(two, n) for n in NODES if n["name"] == "gpu-a")


# What the Helm values and the churn-secrets secret give a pod (nothing is contacted at load).
PRODUCTION_ENV = {
    "CHURN_DEPLOYMENT": "kubernetes",
    "CHURN_WAREHOUSE_URL": "postgresql+psycopg://churn:pw@warehouse:5432/shop",
    "CHURN_REGISTRY_URL": "postgresql+psycopg://churn:pw@registry:5432/registry",
    "CHURN_FEAST_REGISTRY_URL": "postgresql+psycopg://churn:pw@registry:5432/feast",
    "CHURN_FEAST_REDIS_URL": "redis:6379",
    "CHURN_LAKE_ROOT": "s3://churn-lake/lake",
    "CHURN_ARTIFACT_ROOT": "s3://churn-lake/artifacts",
    "CHURN_CODE_VERSION": "0123456789ab",
    "CHURN_ERASURE_KEY": "a-random-erasure-secret-of-the-deployment",
    "CHURN_SETTINGS_FILE": "none",
}


def test_local_mode_does_not_import_dagster_k8s_and_kubernetes_mode_uses_the_k8s_executor() -> None:
    code = (
        "import sys, json; from ml_assets.definitions import defs; "
        "print(json.dumps({'k8s': 'dagster_k8s' in sys.modules, 'executor': defs.resolve_job_def('training_job').executor_def.name}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CHURN_DEPLOYMENT"}
    local = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, check=True)
    assert '"k8s": false' in local.stdout and '"executor": "in_process"' in local.stdout
    k8s = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env={**env, **PRODUCTION_ENV}, check=True
    )
    assert '"k8s": true' in k8s.stdout and '"executor": "churn_k8s_job_executor"' in k8s.stdout
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "CHURN_DEPLOYMENT": "cloud"})
    assert bad.returncode != 0 and "CHURN_DEPLOYMENT: Input should be 'local' or 'kubernetes' (got 'cloud')" in bad.stderr


@pytest.mark.parametrize(
    "missing",
    ["CHURN_WAREHOUSE_URL", "CHURN_REGISTRY_URL", "CHURN_FEAST_REDIS_URL", "CHURN_LAKE_ROOT", "CHURN_CODE_VERSION", "CHURN_ERASURE_KEY"],
)
def test_kubernetes_mode_fails_closed_naming_each_missing_setting(missing: str) -> None:
    """No embedded default in a cluster: a missing secret key must not turn into a pod-local SQLite file."""
    from lib.settings import SettingsError, load_settings

    assert load_settings(PRODUCTION_ENV).deployment.mode == "kubernetes"
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    with pytest.raises(SettingsError, match=f"\\({missing}\\) is not set"):
        load_settings(env)
    # A local file is as bad as nothing; passwords never appear in the message.
    local = {**PRODUCTION_ENV, "CHURN_REGISTRY_URL": "sqlite:////tmp/churn/registry.sqlite", "CHURN_ARTIFACT_ROOT": "/tmp/churn/artifacts"}  # noqa: S108 (a path as a pod sees it, never opened)
    with pytest.raises(SettingsError) as refused:
        load_settings(local)
    assert "CHURN_REGISTRY_URL) points at a pod-local" in str(refused.value) and "CHURN_ARTIFACT_ROOT) points at a pod-local" in str(
        refused.value
    )
    assert "pw@" not in str(refused.value)


def test_loading_the_code_location_in_kubernetes_mode_without_a_secret_exits_non_zero_naming_it() -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}, **PRODUCTION_ENV}
    del env["CHURN_FEAST_REGISTRY_URL"]
    load = subprocess.run([sys.executable, "-c", "import ml_assets.definitions"], capture_output=True, text=True, env=env)
    assert load.returncode != 0 and "deployment.feast_registry_url (CHURN_FEAST_REGISTRY_URL) is not set" in load.stderr
    # In a pod the generated Feast file goes under the writable data folder, never into the image's tree.
    from lib.settings import load_settings

    assert load_settings({**PRODUCTION_ENV, "CHURN_DATA_DIR": "/tmp/churn"}).deployment.feast_repo_path == "/tmp/churn/feast/repo"  # noqa: S108 (pod paths, never opened)


# --- The real step handler and run launcher against an emulated Kubernetes API ---

IMAGE = "registry.example.com/churn:1.0"


@pytest.fixture(scope="module")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """kmock's KubernetesEmulator (an in-memory API server over HTTP) in a thread, and a kubeconfig pointing at it."""
    import yaml
    from kmock import KubernetesEmulator, Server

    state: dict[str, Any] = {}
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with KubernetesEmulator() as emulator, Server(emulator) as server:
            state["url"] = str(server.url).rstrip("/")
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(20), "the Kubernetes emulator did not start"
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": state["url"]}}],
                "users": [{"name": "test", "user": {"token": "test"}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "test", "namespace": "dagster"}}],
                "current-context": "emulator",
            }
        )
    )
    yield {"url": state["url"], "kubeconfig": str(kubeconfig)}
    stop.set()
    thread.join(timeout=5)


def _jobs_from_api(kubeconfig: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Every Job of this run, read back through the API, by the step (or run) it executes."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    listed = client.BatchV1Api(api).list_namespaced_job("dagster")
    out = {}
    for job in listed.items:
        manifest = api.sanitize_for_serialization(job)
        labels = manifest["metadata"].get("labels", {})
        if labels.get("dagster/run-id") == run_id:
            out[labels.get("dagster/op") or "run"] = manifest
    return out


def _launch_steps(kube_api: dict[str, Any], job_name: str, asset_selection: set[dg.AssetKey] | None = None) -> dict[str, dict[str, Any]]:
    from dagster._config import process_config
    from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.context_creation_job import create_context_free_log_manager
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating import StepHandlerContext
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.test_utils import create_run_for_test, instance_for_test
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s import k8s_job_executor

    from ml_assets.k8s import executor_config

    repo = ReconstructableRepository.for_module("ml_assets.definitions", "defs", working_directory=os.getcwd())
    recon = ReconstructableJob(repo, job_name)
    if asset_selection is not None:
        recon = recon.get_subset(asset_selection=asset_selection)
    job_def = recon.get_definition()
    cluster = {"load_incluster_config": False, "kubeconfig_file": kube_api["kubeconfig"], "job_namespace": "dagster"}
    launcher = {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "instance_config_map": "dagster-instance",
            "dagster_home": "/opt/dagster/dagster_home",
            "job_image": IMAGE,
            "service_account_name": "dagster",
            **cluster,
        },
    }
    with instance_for_test(overrides={"run_launcher": launcher}) as instance:
        plan = create_execution_plan(job_def)
        run = create_run_for_test(
            instance, job_name=job_def.name, job_code_origin=recon.get_python_origin(), asset_selection=asset_selection
        )
        # The production executor config (definitions.build_executor) plus how to reach this cluster.
        processed = process_config(k8s_job_executor.config_schema.config_type, {**executor_config(), "job_image": IMAGE, **cluster})
        assert processed.success, processed.errors
        executor = k8s_job_executor.executor_creation_fn(
            InitExecutorContext(job=recon, executor_def=k8s_job_executor, executor_config=processed.value, instance=instance)
        )
        plan_context = PlanOrchestrationContext(
            plan_data=PlanData(
                job=recon, dagster_run=run, instance=instance, execution_plan=plan, raise_on_error=True, retry_mode=RetryMode.DISABLED
            ),
            log_manager=create_context_free_log_manager(instance, run),
            executor=executor,
            output_capture=None,
        )
        for step in plan.steps:
            args = ExecuteStepArgs(
                job_origin=recon.get_python_origin(), run_id=run.run_id, step_keys_to_execute=[step.key], instance_ref=None
            )
            context = StepHandlerContext(
                instance=instance, plan_context=plan_context, steps=[step], execute_step_args=args, dagster_run=run
            )
            events = list(executor._step_handler.launch_step(context))
            assert [e.event_type_value for e in events] == ["STEP_WORKER_STARTING"], step.key
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        return _jobs_from_api(kube_api["kubeconfig"], run.run_id)


@pytest.mark.parametrize(
    ("path", "job_name", "selection"),
    [
        ("schedule and drift sensor: training_job", "training_job", None),
        ("UI or backfill: asset selection", "__ASSET_JOB", {"training_set", "torch_model", "lgbm_model"}),
        ("daily schedule: daily_pipeline_job", "daily_pipeline_job", None),
    ],
)
def test_executor_and_launcher_create_valid_jobs_with_gpu_only_for_training(
    kube_api: dict[str, Any], path: str, job_name: str, selection: set[str] | None
) -> None:
    jobs = _launch_steps(kube_api, job_name, {dg.AssetKey(k) for k in selection} if selection else None)
    assert "run" in jobs, "K8sRunLauncher created no run Job"
    steps = {k: v for k, v in jobs.items() if k != "run"}
    assert steps, path
    for key, manifest in jobs.items():
        _validate(manifest)
        pod = _pod(manifest)
        container = pod["containers"][0]
        assert container["image"] == IMAGE
        gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
        assert gpu == (key == "torch_model"), (path, key)
        if key == "torch_model":
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["tolerations"]
        else:
            assert "nodeSelector" not in pod, key
        if key != "run":
            assert pod["securityContext"]["runAsNonRoot"] is True, key
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, key
            assert container["resources"]["limits"]["memory"], key
    assert ("torch_model" in steps) == (job_name != "daily_pipeline_job")
