"""cluster/: the `ray up` YAML and KubeRay manifests reference only real stages and config keys."""

from __future__ import annotations

import importlib
import re
import shlex
import typing
from pathlib import Path

import pytest
import yaml

from cluster.config import _coerce, build_config, config_fields
from cluster.recipe import recipe_path
from cluster.stages import STAGES

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
FILES = sorted([*CLUSTER.glob("*.yaml"), *CLUSTER.glob("kuberay/*.yaml")])
SUBMIT_FLAGS = {"--address", "--follow", "--job-id", "--working-dir", "--num-cpus", "--num-gpus"}


def d2d_commands(text: str) -> list[list[str]]:
    """Every `d2d ...` command line in a file, comments included (users copy those too)."""
    cmds = []
    for line in text.replace("\\\n", " ").splitlines():
        for m in re.finditer(r"\bd2d\s+([a-z][^#\n\"`)]*)", line):
            try:
                cmds.append(shlex.split(m.group(1)))
            except ValueError:
                cmds.append(m.group(1).split())
    return cmds


def check_command(argv: list[str]) -> None:
    if argv[0] == "submit":
        argv = [a for i, a in enumerate(argv[1:]) if a not in SUBMIT_FLAGS and (i == 0 or argv[i] not in SUBMIT_FLAGS - {"--follow"})]
    if argv[0] == "jobs":
        return
    stage = argv[0]
    assert stage in STAGES, f"unknown stage {stage!r}"
    cls = STAGES[stage].load_config_class()
    fields = config_fields(cls)
    overrides = {}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--set":
            k, v = argv[i + 1].split("=", 1)
            assert k in fields, f"{stage}: unknown key {k!r}"
            overrides[k] = v
            i += 2
        elif a == "--config":
            if STAGES[stage].config_field:
                recipe_path(argv[i + 1])
            i += 2
        elif a.startswith("--"):
            name = a[2:].replace("-", "_")
            assert name in fields or name == "address", f"{stage}: unknown option {a}"
            i += 1 if name in fields and "bool" in str(fields[name].type) else 2
        else:
            i += 1
    hints = typing.get_type_hints(cls)
    for k, v in overrides.items():
        _coerce(k, hints[k], v)


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
