"""Every pod the project ships meets the restricted Pod Security Standard, checked by a maintained policy scanner.

The manifests scanned:
- the step Jobs (a CPU step and the GPU step) as dagster-k8s's step handler builds them from `ml_assets/k8s.py`;
- the run Job as K8sRunLauncher builds it from the instance configuration the values render into;
- the webserver, daemon and user-code Deployments and the migrate Job, as Dagster's chart templates
  (templates/helpers/_deployment-webserver.tpl, deployment-daemon.yaml, job-instance-migrate.yaml and the
  user-deployments subchart's deployment-user.yaml) place the values' security contexts, resources and volumes
  (`chart_pods`, a model of those templates: there is no helm binary here);
- the NetworkPolicies in deploy/k8s/.

The scanner is checkov (kubernetes framework), installed by `make policy` in its own virtualenv (its pins conflict
with this project's). Deliberate exceptions are `checkov.io/skip` annotations in the values or manifests themselves,
each with its reason, so they are visible where the configuration is read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml_assets_tests.system.test_helm_values import VALUES, render_instance

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SHIPPED = ROOT / "deploy" / "k8s"
IMAGE = "registry.example.com/churn@sha256:" + "0" * 64


def _container(name: str, component: dict[str, Any], image: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": component["image"]["pullPolicy"],
        "securityContext": component.get("securityContext", {}),
        "resources": component.get("resources", {}),
        **extra,
    }


def _meta(name: str, component: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "namespace": "dagster", "annotations": dict(component.get("annotations") or {})}


def chart_pods(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployments and the migrate Job the chart renders, reduced to what the policies judge."""
    out = []
    web, daemon = values["dagsterWebserver"], values["dagsterDaemon"]
    for name, component in (("dagster-webserver", web), ("dagster-daemon", daemon)):
        image = f"{component['image']['repository']}:{component['image']['tag']}"
        init = _container("check-db-ready", component, image, command=["sh", "-c", "pg_isready"])
        init["resources"] = component.get("initContainerResources", component.get("resources", {}))
        main = _container("dagster", component, image, volumeMounts=component.get("volumeMounts", []))
        for probe in ("livenessProbe", "readinessProbe"):
            if component.get(probe):
                main[probe] = component[probe]
        pod = {
            "serviceAccountName": "dagster",
            "automountServiceAccountToken": component.get("automountServiceAccountToken", True),
            "securityContext": component.get("podSecurityContext", {}),
            "initContainers": [init],
            "containers": [main],
            "volumes": component.get("volumes", []),
        }
        out.append(_deployment(name, component, pod))
    migrate_pod = {
        "serviceAccountName": "dagster",
        "securityContext": web.get("podSecurityContext", {}),
        "restartPolicy": "Never",
        "containers": [_container("dagster-instance-migrate", web, f"{web['image']['repository']}:{web['image']['tag']}")],
    }
    out.append(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta("dagster-instance-migrate", web),
            "spec": {"template": {"metadata": {"annotations": dict(web.get("annotations") or {})}, "spec": migrate_pod}},
        }
    )
    user = values["dagster-user-deployments"]
    accounts = {
        a["metadata"]["name"]: a for f in SHIPPED.glob("*.yaml") for a in yaml.safe_load_all(f.read_text()) if a["kind"] == "ServiceAccount"
    }
    account = user.get("serviceAccount", {}).get("name", "dagster-user-deployments")
    for deployment in user["deployments"]:
        image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
        main = _container("dagster-user-deployments", deployment, image, volumeMounts=deployment.get("volumeMounts", []))
        main["readinessProbe"] = {"exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(deployment["port"])]}}
        main["livenessProbe"] = {"exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(deployment["port"])]}}
        pod = {
            "serviceAccountName": account,
            # The chart's template sets no automount field: the pod takes its service account's (Kubernetes' rule).
            "automountServiceAccountToken": accounts.get(account, {}).get("automountServiceAccountToken", True),
            "securityContext": deployment.get("podSecurityContext", {}),
            "containers": [main],
            "volumes": deployment.get("volumes", []),
        }
        out.append(_deployment(f"dagster-{deployment['name']}", deployment, pod))
    return out


def _deployment(name: str, component: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, component),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels, "annotations": dict(component.get("annotations") or {})}, "spec": pod},
        },
    }


def project_pods() -> list[dict[str, Any]]:
    """The run Job and the step Jobs dagster-k8s builds from the project's own configuration."""
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
    from kubernetes.client import ApiClient

    from ml_assets.k8s import K8S_CONFIG_TAG, gpu_step_config
    from ml_assets_tests.system.test_k8s import _manifest

    config = render_instance(yaml.safe_load(VALUES.read_text()))["run_launcher"]["config"]
    run = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image=IMAGE,
            dagster_home=config["dagster_home"],
            instance_config_map=config["instance_config_map"],
            postgres_password_secret=config["postgres_password_secret"],
            env_secrets=config["env_secrets"],
            image_pull_policy="Always",
        ),
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-0123456789abcdef",
        pod_name="dagster-run-0123456789abcdef",
        component="run_worker",
        user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["run_k8s_config"]),
    )
    manifests = [ApiClient().sanitize_for_serialization(run)]
    manifests.append(_manifest("lgbm_model", {}, image=IMAGE))
    manifests.append(_manifest("torch_model", {K8S_CONFIG_TAG: json.dumps(gpu_step_config())}, image=IMAGE))
    for m in manifests:
        m["metadata"]["namespace"] = "dagster"
    return manifests


def _scan(manifests: list[dict[str, Any]], where: Path) -> dict[str, Any]:
    where.mkdir(parents=True, exist_ok=True)
    for i, manifest in enumerate(manifests):
        (where / f"{i:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml").write_text(yaml.safe_dump(manifest))
    done = subprocess.run(  # noqa: S603 (fixed argv)
        [str(CHECKOV), "-d", str(where), "--framework", "kubernetes", "-o", "json", "--quiet", "--compact", "--skip-download"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(done.stdout)
    return report if isinstance(report, dict) else {"results": {"failed_checks": [], "passed_checks": []}, "summary": {}}


needs_checkov = pytest.mark.skipif(not CHECKOV.exists(), reason="run `make policy` (make test does) to install checkov")


@needs_checkov
def test_every_pod_the_project_ships_passes_the_policy_scan(tmp_path: Path) -> None:
    values = yaml.safe_load(VALUES.read_text())
    shipped = [m for f in sorted(SHIPPED.glob("*.yaml")) for m in yaml.safe_load_all(f.read_text())]
    manifests = [*project_pods(), *chart_pods(values), *shipped]
    report = _scan(manifests, tmp_path / "manifests")
    failed = [f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in report["results"]["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert report["summary"]["passed"] > 100
    # Every deliberate exception says why, in the configuration itself.
    for check in report["results"].get("skipped_checks", []):
        assert len((check.get("check_result") or {}).get("suppress_comment", "")) > 20, check["check_id"]


@needs_checkov
def test_the_scan_can_fail(tmp_path: Path) -> None:
    """A pod without the restricted settings is reported (the scan above is not vacuous)."""
    loose = project_pods()[1]
    pod = loose["spec"]["template"]["spec"]
    pod["securityContext"] = {}
    pod["containers"][0]["securityContext"] = {"privileged": True}
    report = _scan([loose], tmp_path / "loose")
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23"} <= failed, failed


def test_the_launcher_role_grants_exactly_what_dagster_k8s_calls() -> None:
    """Every Kubernetes API call in dagster-k8s's client and launcher maps to a verb the shipped Role grants; the
    Role grants nothing else (no wildcard, no other resource)."""
    import re

    import dagster_k8s

    verb_of = {"create": "create", "read": "get", "list": "list", "delete": "delete", "patch": "patch", "replace": "update"}
    resource_of = {
        "job": ("batch", "jobs"),
        "job_status": ("batch", "jobs/status"),
        "pod": ("", "pods"),
        "pod_log": ("", "pods/log"),
        "event": ("", "events"),
    }
    package = Path(dagster_k8s.__file__).parent
    calls = set()
    for path in package.glob("*.py"):
        if path.name == "pipes.py":  # Dagster Pipes' own pod launcher: not used by this project
            continue
        calls |= set(re.findall(r"(?:batch|core)_api\.(create|read|list|delete|patch|replace)_namespaced_([a-z_]+)\(", path.read_text()))
    needed = {(*resource_of[res], verb_of[verb]) for verb, res in calls}
    assert needed, "no API call found: the pattern no longer matches dagster-k8s"
    role = next(m for m in yaml.safe_load_all((SHIPPED / "rbac.yaml").read_text()) if m["kind"] == "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert "*" not in {v for *_, v in granted} and "*" not in {r for _, r, _ in granted}
    assert needed <= granted, needed - granted
    # Beyond the calls themselves only `watch` (the client's list-and-wait loops) is granted.
    assert {(g, r, v) for g, r, v in granted - needed} <= {("batch", "jobs", "watch"), ("", "pods", "watch"), ("batch", "jobs", "get")}
    values = yaml.safe_load(VALUES.read_text())
    assert values["rbacEnabled"] is False  # the chart's wildcard Role is not created
