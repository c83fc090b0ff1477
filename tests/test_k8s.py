"""Kubernetes manifests (deploy/k8s): rendered with kustomize and checked.

Rendering: a `kustomize` binary, else `kubectl kustomize` (kubectl embeds kustomize), else the
small pure-Python renderer below, which implements the subset the base uses (`resources` files,
`images`, `namespace`); the overlays need a real kustomize. When a binary is there, the
pure-Python rendering of the base must equal its rendering, so the fallback stays honest.

Checks (each can fail; `test_the_checks_catch_broken_manifests` breaks a rendering on purpose):
every Deployment runs `ghostly serve <service>` on that service's port (libs/config.py) with
native gRPC readiness and liveness probes (grpc.health.v1) on it, CPU and memory requests and
limits, a non-root, read-only, capability-less security context, secrets only by secretKeyRef
(DATABASE_URL and its role's password; no literal secret anywhere, none in the ConfigMap), a
PodDisruptionBudget and a Service selecting exactly its pods; an HPA scales ingest; ingest's
memory limit covers its analysis memory budget and workers; the migrate Job runs
`ghostly migrate --set-role-passwords` with every role password; images carry a tag that is not
`latest`; labels and selectors agree; every referenced ConfigMap/PVC exists. The renderings are
also validated against the Kubernetes JSON schema (kubernetes-validate) when it is installed.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from libs.config import METRICS_PORTS, ROLE_PASSWORDS, SERVICE_PORTS
from tests.helpers import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests (dev dependency)")

K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SCHEMA_VERSION = "1.30"  # oldest Kubernetes the manifests are validated against

# Secrets are referenced by name, created outside git (docs/deploy.md).
SECRETS = {"ghostly-database", "ghostly-auth", "ghostly-s3"}
# Each service's role password, as the service reads it (statistics: libpq's PGPASSWORD, used
# for its ghostly_statistics login; services/statistics/db.py).
PASSWORD_ENV = {
    "ingest": ROLE_PASSWORDS["ghostly_ingest"],
    "statistics": "PGPASSWORD",
    "jit_signal": ROLE_PASSWORDS["ghostly_jit_signal"],
    "export": ROLE_PASSWORDS["ghostly_export"],
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|DATABASE_URL|TOKEN|PUBLIC_KEY|PRIVATE_KEY|ACCESS_KEY|_KEY$")
NOT_SECRET = {"GHOSTLY_TLS_KEY", "GHOSTLY_TLS_CLIENT_KEY"}  # paths of mounted files, not values
NAMESPACED_NOT = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


# --------------------------------------------------------------------------- rendering


def _binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_with_binary(path: Path) -> list[dict]:
    cmd = _binary()
    assert cmd is not None
    out = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{' '.join(cmd)} {path} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    name, at, rest = image.partition("@")
    digest = rest if at else None
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def render_pure_python(path: Path) -> list[dict]:
    """The kustomize subset the base uses: `resources` (files), `images`, `namespace`."""
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    allowed = {"apiVersion", "kind", "resources", "images", "namespace"}
    unknown = set(kustomization) - allowed
    if unknown:
        pytest.skip(f"{path.relative_to(ROOT)} uses {sorted(unknown)}: needs a kustomize binary")
    docs: list[dict] = []
    for resource in kustomization.get("resources", []):
        file = path / resource
        if not file.is_file():
            pytest.skip(f"{path.relative_to(ROOT)} includes {resource}: needs a kustomize binary")
        docs += [d for d in yaml.safe_load_all(file.read_text()) if d]
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for doc in docs:
        if kustomization.get("namespace") and doc["kind"] not in NAMESPACED_NOT:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for container in _containers(doc):
            name, tag, digest = _split_image(container["image"])
            rule = images.get(name)
            if rule:
                new = rule.get("newName", name)
                if rule.get("digest"):
                    container["image"] = f"{new}@{rule['digest']}"
                else:
                    tag = rule.get("newTag", tag)
                    container["image"] = new + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return docs


def render(path: Path) -> list[dict]:
    if _binary():
        return render_with_binary(path)
    return render_pure_python(path)


# --------------------------------------------------------------------------- helpers


def _pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def _containers(doc: dict) -> list[dict]:
    spec = _pod_spec(doc)
    return [] if spec is None else [*spec.get("initContainers", []), *spec.get("containers", [])]


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _quantity(value) -> float:
    """A Kubernetes quantity: CPU in cores, memory in bytes."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _config(docs: list[dict]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for cm in _by_kind(docs, "ConfigMap"):
        merged.update(cm.get("data", {}))
    return merged


# --------------------------------------------------------------------------- the checks


def check(docs: list[dict]) -> list[str]:
    """Every problem of a rendering, one line each (empty: fine)."""
    problems: list[str] = []
    deployments = _by_kind(docs, "Deployment")
    configmaps = {d["metadata"]["name"] for d in _by_kind(docs, "ConfigMap")}
    pvcs = {d["metadata"]["name"] for d in _by_kind(docs, "PersistentVolumeClaim")}
    services = _by_kind(docs, "Service")
    config = _config(docs)
    seen_services: set[str] = set()

    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if "app.kubernetes.io/part-of" not in doc["metadata"].get("labels", {}) and doc["kind"] != "Namespace":
            problems.append(f"{name}: no app.kubernetes.io/part-of label")
        spec = _pod_spec(doc)
        if spec is None:
            continue
        pod_sc = spec.get("securityContext", {})
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("runAsUser", 0) == 0:
            problems.append(f"{name}: the pod must run as a non-root user (runAsNonRoot, runAsUser != 0)")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken must be false")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problems.append(f"{name}: volume {v['name']} names a missing ConfigMap")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in pvcs:
                problems.append(f"{name}: volume {v['name']} names a missing PVC")
        for c in _containers(doc):
            cname = f"{name} container {c['name']}"
            image = c.get("image", "")
            _, tag, digest = _split_image(image)
            if not (tag or digest) or tag == "latest":
                problems.append(f"{cname}: image {image!r} needs a release tag or digest (not latest)")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        problems.append(f"{cname}: no {kind}.{r}")
            for r in ("cpu", "memory"):
                if (
                    r in res.get("requests", {})
                    and r in res.get("limits", {})
                    and _quantity(res["requests"][r]) > _quantity(res["limits"][r])
                ):
                    problems.append(f"{cname}: requests.{r} above limits.{r}")
            sc = c.get("securityContext", {})
            if (
                sc.get("allowPrivilegeEscalation") is not False
                or sc.get("readOnlyRootFilesystem") is not True
                or "ALL" not in sc.get("capabilities", {}).get("drop", [])
                or sc.get("privileged")
            ):
                problems.append(
                    f"{cname}: securityContext must forbid privilege escalation, drop ALL "
                    f"capabilities and mount the root filesystem read-only"
                )
            if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
                problems.append(f"{cname}: runs as root")
            if sc.get("readOnlyRootFilesystem") and "/tmp" not in {m["mountPath"] for m in c.get("volumeMounts", [])}:
                problems.append(f"{cname}: read-only root filesystem without a writable /tmp")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problems.append(f"{cname}: mounts unknown volume {m['name']}")
            for src in c.get("envFrom", []):
                if "configMapRef" in src and src["configMapRef"]["name"] not in configmaps:
                    problems.append(f"{cname}: envFrom names a missing ConfigMap")
                if "secretRef" in src:
                    problems.append(f"{cname}: envFrom secretRef (reference each key with secretKeyRef)")
            env = {e["name"]: e for e in c.get("env", [])}
            for var, e in env.items():
                secretish = SECRET_NAME.search(var) and var not in NOT_SECRET
                if secretish and "value" in e:
                    problems.append(f"{cname}: {var} is a literal value (secrets by secretKeyRef only)")
                if secretish and "secretKeyRef" not in e.get("valueFrom", {}):
                    problems.append(f"{cname}: {var} must come from a secretKeyRef")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in SECRETS:
                    problems.append(f"{cname}: {var} references unknown Secret {ref['name']!r}")
            if doc["kind"] == "Job":
                problems += _check_migrate_job(cname, c, env)
            if doc["kind"] == "Deployment":
                problems += _check_service_container(doc, c, env, config, services, seen_services)

    for d in deployments:
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        selector = d["spec"]["selector"].get("matchLabels", {})
        dname = d["metadata"]["name"]
        if not _matches(selector, labels):
            problems.append(f"Deployment/{dname}: selector {selector} does not match its pod labels")
        if not any(
            _matches(p["spec"]["selector"].get("matchLabels", {}), labels)
            for p in _by_kind(docs, "PodDisruptionBudget")
        ):
            problems.append(f"Deployment/{dname}: no PodDisruptionBudget")
        others = [
            o
            for o in deployments
            if o is not d and _matches(selector, o["spec"]["template"]["metadata"].get("labels", {}))
        ]
        if others:
            problems.append(f"Deployment/{dname}: its selector also matches {others[0]['metadata']['name']}")
        grace = d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if grace <= float(config.get("GHOSTLY_SHUTDOWN_GRACE_S", 10)):
            problems.append(f"Deployment/{dname}: terminationGracePeriodSeconds {grace} leaves no time to drain")
    for s in services:
        hits = [
            d
            for d in deployments
            if _matches(s["spec"].get("selector", {}), d["spec"]["template"]["metadata"].get("labels", {}))
        ]
        if len(hits) != 1:
            problems.append(f"Service/{s['metadata']['name']}: selects {len(hits)} Deployments (must be 1)")
    for p in _by_kind(docs, "PodDisruptionBudget"):
        if not any(
            _matches(p["spec"]["selector"].get("matchLabels", {}), d["spec"]["template"]["metadata"].get("labels", {}))
            for d in deployments
        ):
            problems.append(f"PodDisruptionBudget/{p['metadata']['name']}: selects no Deployment")
    missing = set(SERVICE_PORTS) - seen_services
    if missing:
        problems.append(f"no Deployment serves {sorted(missing)}")
    jobs = [j for j in _by_kind(docs, "Job") if any("migrate" in c.get("command", []) for c in _containers(j))]
    if len(jobs) != 1:
        problems.append(f"{len(jobs)} migrate Jobs (must be 1)")
    hpas = [h for h in _by_kind(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"]
    ingest = [d for d in deployments if _serves(d) == "ingest"]
    if not ingest or not any(h["spec"]["scaleTargetRef"]["name"] == ingest[0]["metadata"]["name"] for h in hpas):
        problems.append("no HorizontalPodAutoscaler targets the ingest Deployment")
    for h in hpas:
        target = h["spec"]["scaleTargetRef"]["name"]
        if target not in {d["metadata"]["name"] for d in deployments}:
            problems.append(f"HorizontalPodAutoscaler/{h['metadata']['name']}: targets missing Deployment {target}")
        elif h["spec"].get("minReplicas", 1) < 2:
            problems.append(f"HorizontalPodAutoscaler/{h['metadata']['name']}: minReplicas < 2 (the PDB needs 2)")
        dep = next(d for d in deployments if d["metadata"]["name"] == target)
        if "replicas" in dep["spec"]:
            problems.append(f"Deployment/{target}: sets replicas although an HPA owns them")
    return problems


def _serves(deployment: dict) -> str | None:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        cmd = c.get("command", [])
        if cmd[:2] == ["ghostly", "serve"] and len(cmd) == 3:
            return cmd[2]
    return None


def _check_service_container(doc, c, env, config, services, seen) -> list[str]:
    problems: list[str] = []
    cname = f"Deployment/{doc['metadata']['name']} container {c['name']}"
    svc = _serves(doc)
    if svc not in SERVICE_PORTS:
        return [f"{cname}: command {c.get('command')} is not `ghostly serve <service>`"]
    seen.add(svc)
    port = SERVICE_PORTS[svc][1]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("grpc") != port:
        problems.append(f"{cname}: container port 'grpc' must be {port}")
    if ports.get("metrics") != METRICS_PORTS[svc][1]:
        problems.append(f"{cname}: container port 'metrics' must be {METRICS_PORTS[svc][1]}")
    for probe in ("readinessProbe", "livenessProbe"):
        grpc_probe = c.get(probe, {}).get("grpc")
        if not grpc_probe or grpc_probe.get("port") != port:
            problems.append(f"{cname}: {probe} must be a native grpc probe on port {port}")
    for var in ("DATABASE_URL", PASSWORD_ENV[svc]):
        if "secretKeyRef" not in env.get(var, {}).get("valueFrom", {}):
            problems.append(f"{cname}: {var} must come from a secretKeyRef")
    if not any(
        _matches(s["spec"].get("selector", {}), doc["spec"]["template"]["metadata"].get("labels", {}))
        and any(p["port"] == port for p in s["spec"]["ports"])
        for s in services
    ):
        problems.append(f"{cname}: no Service exposes port {port}")
    if svc == "ingest":
        workers = int(config.get("GHOSTLY_INGEST_WORKERS", 0) or 0)
        budget = int(config.get("GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB", 2048))
        limits = c.get("resources", {}).get("limits", {})
        if not workers:
            problems.append(f"{cname}: set GHOSTLY_INGEST_WORKERS (the default, one per node CPU, ignores the limit)")
        elif "cpu" in limits and _quantity(limits["cpu"]) < workers:
            problems.append(f"{cname}: cpu limit below GHOSTLY_INGEST_WORKERS={workers}")
        need = (budget + 256 * (workers + 1)) * 2**20
        if "memory" in limits and _quantity(limits["memory"]) < need:
            problems.append(
                f"{cname}: memory limit {limits['memory']} below the analysis budget {budget} MiB "
                f"+ 256 MiB x {workers + 1} processes"
            )
    if svc == "export":
        for var, target in (("GHOSTLY_STATISTICS_ADDRESS", "statistics"), ("GHOSTLY_JIT_SIGNAL_ADDRESS", "jit_signal")):
            address = config.get(var) or env.get(var, {}).get("value", "")
            host, _, p = address.rpartition(":")
            if not any(
                s["metadata"]["name"] == host.split(".")[0] and any(str(sp["port"]) == p for sp in s["spec"]["ports"])
                for s in services
            ) or p != str(SERVICE_PORTS[target][1]):
                problems.append(f"{cname}: {var}={address!r} is not a Service of {target}")
    return problems


def _check_migrate_job(cname, c, env) -> list[str]:
    problems: list[str] = []
    if c.get("command", [])[:2] != ["ghostly", "migrate"] or "--set-role-passwords" not in c.get("command", []):
        problems.append(f"{cname}: must run `ghostly migrate --set-role-passwords`")
    for var in ("DATABASE_URL", *ROLE_PASSWORDS.values()):
        if "secretKeyRef" not in env.get(var, {}).get("valueFrom", {}):
            problems.append(f"{cname}: {var} must come from a secretKeyRef")
    return problems


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(BASE)


def test_base_renders_every_workload(base):
    kinds = sorted({(d["kind"], d["metadata"]["name"]) for d in base})
    assert ("Job", "ghostly-migrate") in kinds
    assert sorted(_serves(d) for d in _by_kind(base, "Deployment")) == sorted(SERVICE_PORTS)
    assert not _by_kind(base, "Secret"), "secrets are referenced, never defined in the manifests"


def test_base_passes_the_checks(base):
    assert check(base) == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.name for p in OVERLAYS])
def test_overlays_render_and_pass_the_checks(overlay):
    if not _binary():
        pytest.skip("overlays need a kustomize binary (kustomize or kubectl)")
    docs = render_with_binary(overlay)
    assert check(docs) == []
    namespaced = [d for d in docs if d["kind"] not in NAMESPACED_NOT]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"ghostly"}


def test_pure_python_renderer_equals_kustomize():
    if not _binary():
        pytest.skip("no kustomize binary to compare with")
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(render_pure_python(BASE), key=key) == sorted(render_with_binary(BASE), key=key)


def test_the_checks_catch_broken_manifests(base):
    def broken(edit) -> list[str]:
        docs = copy.deepcopy(base)
        edit(docs)
        return check(docs)

    def deployment(docs, svc="statistics"):
        return next(d for d in _by_kind(docs, "Deployment") if _serves(d) == svc)

    def container(docs, svc="statistics"):
        return deployment(docs, svc)["spec"]["template"]["spec"]["containers"][0]

    cases = {
        "readinessProbe": lambda d: container(d).pop("readinessProbe"),
        "livenessProbe must be a native grpc": lambda d: container(d).__setitem__(
            "livenessProbe", {"tcpSocket": {"port": 50052}}
        ),
        "grpc probe on port": lambda d: container(d)["readinessProbe"]["grpc"].__setitem__("port", 50051),
        "no limits.memory": lambda d: container(d)["resources"]["limits"].pop("memory"),
        "non-root": lambda d: deployment(d)["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
        "literal value": lambda d: container(d)["env"].append({"name": "GHOSTLY_JWT_SECRET", "value": "hunter2"}),
        "PGPASSWORD must come from a secretKeyRef": lambda d: container(d).__setitem__(
            "env", [e for e in container(d)["env"] if e["name"] != "PGPASSWORD"]
        ),
        "not latest": lambda d: container(d).__setitem__("image", "ghostly-emg-backend:latest"),
        "no PodDisruptionBudget": lambda d: d.remove(
            next(p for p in _by_kind(d, "PodDisruptionBudget") if p["metadata"]["name"] == "ghostly-export")
        ),
        "no HorizontalPodAutoscaler": lambda d: d.remove(_by_kind(d, "HorizontalPodAutoscaler")[0]),
        "does not match its pod labels": lambda d: deployment(d)["spec"]["selector"]["matchLabels"].__setitem__(
            "app.kubernetes.io/name", "ghostly-typo"
        ),
        "selects 0 Deployments": lambda d: next(
            s for s in _by_kind(d, "Service") if s["metadata"]["name"] == "ghostly-export"
        )["spec"].__setitem__("selector", {"app.kubernetes.io/name": "nobody"}),
        "migrate Jobs": lambda d: d.remove(_by_kind(d, "Job")[0]),
        "memory limit": lambda d: container(d, "ingest")["resources"]["limits"].__setitem__("memory", "2Gi"),
        "missing PVC": lambda d: d.remove(_by_kind(d, "PersistentVolumeClaim")[0]),
        "ALL capabilities": lambda d: container(d)["securityContext"].pop("capabilities"),
    }
    for expected, edit in cases.items():
        problems = broken(edit)
        assert any(expected in p for p in problems), (expected, problems)


def test_schema_validation():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (offline schemas)")
    targets = [BASE] + (OVERLAYS if _binary() else [])
    for path in targets:
        for doc in render(path):
            try:
                kv.validate(doc, SCHEMA_VERSION, strict=True)
            except kv.ValidationError as exc:  # strict: an unknown field (a typo) fails too
                raise AssertionError(
                    f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}: {exc}"
                ) from exc


def test_schema_validation_can_fail(base):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (offline schemas)")
    doc = copy.deepcopy(next(d for d in base if d["kind"] == "Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 1}}  # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, SCHEMA_VERSION, strict=True)
