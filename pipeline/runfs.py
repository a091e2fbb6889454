"""The run directory: one place, local path or URI (`s3://bucket/runs/x`), for all artifacts.

    from pipeline.runfs import RunDir
    run = RunDir("runs/demo")
    run.write_json("curated/stats.json", stats)     # atomic on local disks
    run.exists("tokens/manifest.json")

Stages meet only here, so every read and write of an artifact goes through fsspec
and works the same on a laptop and against object storage.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec

from pipeline.errors import StageError


def is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


class RunDir:
    def __init__(self, root: str | os.PathLike):
        root = str(root)
        if not is_remote(root):
            root = str(Path(root.removeprefix("file://")).expanduser().absolute())
        self.root = root.rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root)

    def __repr__(self) -> str:
        return f"RunDir({self.root!r})"

    def path(self, *parts: str) -> str:
        """Full path or URI of an artifact below the run dir."""
        if is_remote(self.root):
            return posixpath.join(self.root, *parts)
        return str(Path(self.root, *parts))

    def _p(self, rel: str) -> str:
        return posixpath.join(self._base, rel) if rel else self._base

    def exists(self, rel: str = "") -> bool:
        return self.fs.exists(self._p(rel))

    def require(self, rel: str, made_by: str) -> str:
        """Path of an input artifact, or a StageError saying which stage makes it."""
        if not self.exists(rel):
            raise StageError(f"{self.path(rel)} not found: run `d2d {made_by} --run-dir {self.root}` first")
        return self.path(rel)

    def makedirs(self, rel: str) -> str:
        self.fs.makedirs(self._p(rel), exist_ok=True)
        return self.path(rel)

    def glob(self, pattern: str) -> list[str]:
        found = sorted(self.fs.glob(self._p(pattern)))
        if is_remote(self.root):
            proto = self.root.split("://", 1)[0]
            return [f"{proto}://{p}" for p in found]
        return found

    def read_text(self, rel: str) -> str:
        with self.fs.open(self._p(rel), "r") as f:
            return f.read()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def write_text(self, rel: str, text: str) -> str:
        """Write atomically: a reader sees the old file or the whole new one, never half."""
        target = self._p(rel)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(tmp, "w") as f:
            f.write(text)
        self.fs.mv(tmp, target)
        return self.path(rel)

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_text(rel, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def append_jsonl(self, rel: str, row: dict) -> None:
        target = self._p(rel)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        with self.fs.open(target, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self._p(rel), recursive=True)
