"""cluster.config: typed configs from presets, files and --set overrides (no Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from cluster.config import ConfigError, build_config, describe, field_docs, parse_set


@dataclass(kw_only=True)
class Toy:
    presets: ClassVar[dict] = {"tiny": {"layers": 2, "name": "tiny"}}
    layers: int = 4
    """Transformer blocks."""
    lr: float = 3e-4
    """Peak learning rate."""
    name: str = "toy"
    """A label."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where to run."""
    tags: list[str] = field(default_factory=list)
    """Free-form tags."""
    limit: int | None = None
    """Optional cap."""
    verbose: bool = False
    """Chatty output."""
    extra: dict = field(default_factory=dict)
    """A bare `dict` field (like pretrain's model_overrides)."""

    def __post_init__(self):
        if self.layers < 1:
            raise ValueError("layers: must be at least 1")


def test_field_docs_come_from_the_docstring_under_each_field():
    docs = field_docs(Toy)
    assert docs["layers"] == "Transformer blocks."
    assert docs["verbose"] == "Chatty output."
    text = describe(Toy)
    assert "lr (float, default 0.0003)" in text and "Peak learning rate." in text
    assert "presets: tiny" in text


@pytest.mark.parametrize(
    "sets, expect",
    [
        (["layers=8"], {"layers": 8}),
        (["lr=1e-3"], {"lr": 1e-3}),
        (["device=cuda"], {"device": "cuda"}),
        (["tags=a,b"], {"tags": ["a", "b"]}),
        (['tags=["x y"]'], {"tags": ["x y"]}),
        (["limit=none"], {"limit": None}),
        (["limit=7"], {"limit": 7}),
        (["verbose=true"], {"verbose": True}),
        (["verbose=off"], {"verbose": False}),
        (["layers=1_000"], {"layers": 1000}),
        (['extra={"hidden_size": 128}'], {"extra": {"hidden_size": 128}}),
    ],
)
def test_set_values_are_parsed_by_field_type(sets, expect):
    cfg = build_config(Toy, None, sets)
    for k, v in expect.items():
        assert getattr(cfg, k) == v


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["no_such_key=1"], "no_such_key"),
        (["layres=3"], "did you mean 'layers'"),
        (["layers=two"], "layers: expected int"),
        (["lr=fast"], "lr: expected float"),
        (["device=tpu"], "device: 'tpu' is not one of 'cpu', 'cuda'"),
        (["verbose=maybe"], "verbose: expected bool"),
        (["layers=0"], "layers: must be at least 1"),
        (["layers"], "expected key=value"),
        (["extra=[1]"], "extra: expected dict"),
    ],
)
def test_bad_values_fail_naming_the_field(sets, needle):
    with pytest.raises(ConfigError, match=None) as e:
        build_config(Toy, None, sets)
    assert needle in str(e.value)


def test_preset_then_file_then_overrides(tmp_path):
    assert build_config(Toy, "tiny").layers == 2
    assert build_config(Toy, "tiny", ["layers=3"]).layers == 3
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\nlr: 0.01\n")
    cfg = build_config(Toy, str(f))
    assert (cfg.layers, cfg.lr, cfg.name) == (2, 0.01, "tiny")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  toy:\n    layers: 5\n  other:\n    x: 1\n")
    assert build_config(Toy, str(recipe), section="toy").layers == 5
    with pytest.raises(ConfigError, match="no such preset"):
        build_config(Toy, "huge")
    with pytest.raises(ConfigError, match="not found"):
        build_config(Toy, str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("layerz: 3\n")
    with pytest.raises(ConfigError, match="layerz"):
        build_config(Toy, str(bad))


def test_parse_set_normalises_dashes():
    assert parse_set(["max-steps=5", "a=b=c"]) == {"max_steps": "5", "a": "b=c"}
