"""cluster/: the `ray up` YAML and KubeRay manifests reference only real stages and config keys."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml
from helpers.commands import check_command, d2d_commands

from cluster.config import build_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
FILES = sorted([*CLUSTER.glob("*.yaml"), *CLUSTER.glob("kuberay/*.yaml")])


def test_all_cluster_definitions_exist():
    names = {p.relative_to(CLUSTER).as_posix() for p in FILES}
    assert {"ray-cluster.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/rayservice.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_definitions_parse_and_reference_real_stages_and_keys(path):
    text = path.read_text()
    docs = list(yaml.safe_load_all(text))
    assert docs and all(isinstance(d, dict) for d in docs)
    for argv in d2d_commands(text):
        check_command(argv)


def test_rayjob_runs_a_curation_stage():
    job = yaml.safe_load((CLUSTER / "kuberay/rayjob.yaml").read_text())
    assert job["kind"] == "RayJob"
    assert shlex.split(job["spec"]["entrypoint"])[:2] == ["d2d", "curate"]


def test_rayservice_imports_the_chat_app_with_valid_args():
    svc = yaml.safe_load((CLUSTER / "kuberay/rayservice.yaml").read_text())
    assert svc["kind"] == "RayService"
    serve_cfg = yaml.safe_load(svc["spec"]["serveConfigV2"])
    app = serve_cfg["applications"][0]
    module, _, attr = app["import_path"].rpartition(".") if ":" not in app["import_path"] else app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attr)
    assert callable(builder)
    from serving.config import ServeConfig

    build_config(ServeConfig, None, app.get("args", {}))


# --- the KubeRay manifests against the CRDs' OpenAPI v3 schemas (../shared/data/kuberay)

KUBERAY = {"RayCluster": "ray.io_rayclusters.yaml.gz", "RayJob": "ray.io_rayjobs.yaml.gz",
           "RayService": "ray.io_rayservices.yaml.gz"}
MANIFESTS = sorted(CLUSTER.glob("kuberay/*.yaml"))


def crd_schema(kind: str) -> dict:
    import gzip

    from conftest import shared

    crd = yaml.safe_load(gzip.open(shared(f"kuberay/{KUBERAY[kind]}"), "rt"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _strict(schema):
    """Reject unknown fields, as the API server does for CRDs (structural schemas prune them)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema = {**schema, "additionalProperties": False}
        return {k: _strict(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_validates_against_its_crd_schema(path):
    import jsonschema

    doc = yaml.safe_load(path.read_text())
    schema = _strict(crd_schema(doc["kind"]))
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_the_schema_check_catches_a_misplaced_field():
    import jsonschema

    doc = yaml.safe_load((CLUSTER / "kuberay/rayservice.yaml").read_text())
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert list(jsonschema.Draft7Validator(_strict(crd_schema("RayService"))).iter_errors(doc))


def _cluster_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]
    return [spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec]


def _pod_specs(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in cluster["workerGroupSpecs"])]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_sets_dashboard_token_auth(path):
    for cluster in _cluster_specs(yaml.safe_load(path.read_text())):
        assert cluster.get("authOptions", {}).get("mode") == "token", f"{path.name}: dashboard without token auth"
        assert cluster["authOptions"].get("secretName")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_mounted_path_is_a_declared_volume(path):
    doc = yaml.safe_load(path.read_text())
    for cluster in _cluster_specs(doc):
        for pod in _pod_specs(cluster):
            volumes = {v["name"] for v in pod.get("volumes", [])}
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                for m in c.get("volumeMounts", []):
                    assert m["name"] in volumes, f"{path.name}: {c['name']} mounts undeclared volume {m['name']}"


def test_rayservice_mounts_or_fetches_every_path_its_serve_config_references():
    svc = yaml.safe_load((CLUSTER / "kuberay/rayservice.yaml").read_text())
    args = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]
    paths = [args["model"], args["api_keys_file"], args["audit_log"]]
    for pod in _pod_specs(svc["spec"]["rayClusterConfig"]):
        (ray_container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in ray_container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for p in paths:
            hits = [mp for mp in mounts if p.startswith(mp.rstrip("/") + "/")]
            assert hits, f"{p} is on no mounted volume"
        keys_volume = volumes[mounts["/secrets/d2d"]]
        assert keys_volume["secret"]["secretName"]
        assert Path(args["api_keys_file"]).name in ("api_keys",)
        # The model comes from the run directory's URI: an init container fetches it into the volume.
        (fetch,) = pod["initContainers"]
        assert fetch["command"][:3] == ["python", "-m", "cluster.fetch"]
        assert "://" in fetch["command"][3] and fetch["command"][4] == args["model"]
        assert {m["name"] for m in fetch["volumeMounts"]} == {mounts["/models"]}


def test_rayservice_autoscales_llm_and_the_guarded_ingress():
    svc = yaml.safe_load((CLUSTER / "kuberay/rayservice.yaml").read_text())
    args = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert {"LLM", "Ingress"} <= set(args["autoscaling"])
    assert all(a["max_replicas"] > a["min_replicas"] for a in args["autoscaling"].values())


def test_ray_up_yaml_guards_the_dashboard_and_ships_the_token():
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    for cmd in [*cfg["head_start_ray_commands"], *cfg["worker_start_ray_commands"]]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["resources"].get("GPU", 0) >= 1 and gpu["max_workers"] >= 1


def test_dockerfile_installs_the_project_with_its_object_store_client():
    text = (CLUSTER / "Dockerfile").read_text()
    assert "-c constraints.txt ." in text and "import s3fs" in text
    import tomllib

    deps = tomllib.loads((CLUSTER.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("s3fs") for d in deps)


def test_cluster_doc_commands_name_real_stages_and_keys():
    text = (CLUSTER.parent / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    cmds = [c for b in blocks for c in d2d_commands(b)]
    assert {c[0] for c in cmds} >= {"submit", "jobs", "serve"}
    for argv in cmds:
        check_command(argv)
