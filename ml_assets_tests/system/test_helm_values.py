"""deploy/helm/values.yaml renders into an instance configuration Dagster accepts.

`render_instance` mirrors how Dagster's official chart (templates/configmap-instance.yaml
and the run launcher / storage / run coordinator helpers) maps these values into
the instance's dagster.yaml. The result is validated by Dagster itself
(`dagster_instance_config` on a real file, and each configurable class's own
schema: K8sRunLauncher, the PostgreSQL storage, QueuedRunCoordinator); the
run pod the launcher would create is built by dagster-k8s and validated against
the Kubernetes schemas in strict mode. What this does not verify: the chart's
templates themselves (no helm binary here).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

VALUES = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "values.yaml"
DAGSTER_HOME = "/opt/dagster/dagster_home"


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def render_instance(values: dict[str, Any], release: str = "dagster") -> dict[str, Any]:
    pg = values["postgresql"]
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": {},
    }
    if pg.get("postgresqlScheme"):
        postgres_db["scheme"] = pg["postgresqlScheme"]
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    queued = coordinator["config"]["queuedRunCoordinator"]
    rendered: dict[str, Any] = {
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "dagster_home": DAGSTER_HOME,
                "instance_config_map": f"{release}-instance",
                "postgres_password_secret": values["global"]["postgresqlSecretName"],
                "job_namespace": k8s["jobNamespace"],
                "load_incluster_config": True,
                "env_secrets": [s["name"] for s in k8s.get("envSecrets", [])],
                "run_k8s_config": {_snake(k): v for k, v in k8s.get("runK8sConfig", {}).items()},
            },
        },
        "storage": {"postgres": {"postgres_db": postgres_db}},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued.get("tagConcurrencyLimits", []),
            },
        },
    }
    rendered["telemetry"] = {"enabled": bool(values.get("telemetry", {}).get("enabled", True))}
    if values.get("computeLogManager", {}).get("type") == "NoOpComputeLogManager":
        rendered["compute_logs"] = {"module": "dagster.core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
    monitoring = values["dagsterDaemon"].get("runMonitoring", {})
    if monitoring.get("enabled"):
        # The chart's mapping (templates/configmap-instance.yaml): only these keys.
        rendered["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        }
        if monitoring.get("maxResumeRunAttempts"):
            rendered["run_monitoring"]["max_resume_run_attempts"] = monitoring["maxResumeRunAttempts"]
    return rendered


@pytest.fixture(scope="module")
def instance_config() -> dict[str, Any]:
    return render_instance(yaml.safe_load(VALUES.read_text()))


def test_rendered_instance_passes_dagsters_own_validation(instance_config: dict[str, Any], tmp_path: Path) -> None:
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    loaded, _ = dagster_instance_config(str(tmp_path))
    assert loaded["run_launcher"]["class"] == "K8sRunLauncher"
    # Run monitoring on: the K8s launcher checks run pods, so a run whose pod died is failed, not left STARTED.
    assert loaded["run_monitoring"]["enabled"] is True and K8sRunLauncher.supports_check_run_worker_health.fget(None) is True
    for cls, config in (
        (K8sRunLauncher, instance_config["run_launcher"]["config"]),
        (DagsterPostgresStorage, instance_config["storage"]["postgres"]),
        (QueuedRunCoordinator, instance_config["run_coordinator"]["config"]),
    ):
        result = validate_config(cls.config_type(), config)
        assert result.success, (cls.__name__, [e.message for e in result.errors])


def test_validation_can_fail(instance_config: dict[str, Any]) -> None:
    from dagster._config import validate_config
    from dagster_k8s import K8sRunLauncher

    broken = {**instance_config["run_launcher"]["config"], "job_namespace": 7}
    assert not validate_config(K8sRunLauncher.config_type(), broken).success


def test_run_pod_from_the_launcher_config_is_valid_and_safe(instance_config: dict[str, Any]) -> None:
    import kubernetes_validate
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
    from kubernetes.client import ApiClient

    config = instance_config["run_launcher"]["config"]
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image="registry.example.com/churn:1.0",
            dagster_home=config["dagster_home"],
            instance_config_map=config["instance_config_map"],
            postgres_password_secret=config["postgres_password_secret"],
            env_secrets=config["env_secrets"],
        ),
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-0123456789abcdef",
        pod_name="dagster-run-0123456789abcdef",
        component="run_worker",
        user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["run_k8s_config"]),
    )
    manifest = ApiClient().sanitize_for_serialization(job)
    kubernetes_validate.validate(manifest, "1.33.0", strict=True)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        container["securityContext"]["allowPrivilegeEscalation"] is False and container["securityContext"]["readOnlyRootFilesystem"] is True
    )
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]  # the run pod orchestrates; only the training step gets a GPU
    assert {"secretRef": {"name": "churn-secrets"}} in container["envFrom"]
