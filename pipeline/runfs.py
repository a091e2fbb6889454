"""The run directory: one place, local path or URI (`s3://bucket/runs/x`), for all artifacts.

    from pipeline.runfs import RunDir
    run = RunDir("runs/demo")
    run.write_json("curated/stats.json", stats)     # atomic on local disks
    run.exists("tokens/manifest.json")
    run.save_pretrained("sft", model, tok)          # HF folder: saved locally, then uploaded
    local = run.local_dir("sft")                    # a local copy to from_pretrained (cached)
    trainer_kw = run.ray_storage(".ray_train")      # RunConfig(storage_path=..., storage_filesystem=...)

Stages meet only here, so every read and write of an artifact goes through fsspec
and works the same on a laptop and against object storage. For S3-compatible stores
s3fs takes the endpoint from `AWS_ENDPOINT_URL` (with `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`); every Ray node or the job's
`runtime_env` must carry the same variables, since workers open the store themselves.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import fsspec

from pipeline.errors import StageError


def is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


#: Local copies of remote folders made by `RunDir.local_dir`, per process: uri -> (fingerprint, path).
_LOCAL_COPIES: dict[str, tuple[tuple, str]] = {}


def fsspec_exists(path: str) -> bool:
    """Whether a file or folder given as a path or URI exists."""
    fs, p = fsspec.core.url_to_fs(str(path))
    return fs.exists(p)


def local_path(path: str) -> str:
    """A local path for a file or folder given as a path or URI (remote ones are downloaded once)."""
    if not is_remote(path):
        return str(Path(str(path).removeprefix("file://")).expanduser())
    parent, name = posixpath.split(str(path).rstrip("/"))
    run = RunDir(parent)
    if run.fs.isdir(run._p(name)):
        return run.local_dir(name)
    return run.local_file(name)


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
            return posixpath.join(self.root, *parts).rstrip("/")
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

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self._p(rel), "rb") as f:
            return f.read()

    def read_jsonl(self, rel: str) -> list[dict]:
        """Rows of a JSONL artifact; [] when it does not exist yet."""
        if not self.exists(rel):
            return []
        return [json.loads(x) for x in self.read_text(rel).splitlines() if x.strip()]

    def write_jsonl(self, rel: str, rows: list[dict]) -> str:
        return self.write_text(rel, "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows))

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write atomically, as `write_text`."""
        target = self._p(rel)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, target)
        return self.path(rel)

    # ------------------------------------------------------------ folders (Hugging Face models)

    def upload_dir(self, local: str, rel: str = "") -> str:
        """Copy every file below a local folder to rel/ (a no-op when it is that folder already)."""
        dest = self.path(rel)
        if not is_remote(self.root) and Path(local).resolve() == Path(dest).resolve():
            return dest
        for src in sorted(Path(local).rglob("*")):
            if src.is_file():
                target = self._p(posixpath.join(rel, src.relative_to(local).as_posix()))
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                self.fs.put_file(str(src), target)
        _LOCAL_COPIES.pop(dest, None)
        return dest

    def save_pretrained(self, rel: str, *objs) -> str:
        """`obj.save_pretrained` of each object (model, tokenizer) into rel/, local or remote."""
        from pipeline.tokenizer import save_tokenizer

        def save(folder: str) -> None:
            for obj in objs:
                if hasattr(obj, "chat_template") or hasattr(obj, "convert_tokens_to_ids"):
                    save_tokenizer(obj, folder)  # keeps the chat template inside tokenizer_config.json
                else:
                    obj.save_pretrained(folder)

        if not is_remote(self.root):
            save(self.makedirs(rel))
            return self.path(rel)
        with tempfile.TemporaryDirectory(prefix="d2d-save-") as tmp:
            save(tmp)
            return self.upload_dir(tmp, rel)

    def local_dir(self, rel: str = "") -> str:
        """A local folder with rel/'s files: the folder itself on a local disk, else a download.

        Downloads are cached per process and refreshed when the remote listing (names,
        sizes, ETags) changes, so a model rewritten by a later stage is fetched again.
        """
        if not is_remote(self.root):
            return self.path(rel)
        uri = self.path(rel)
        base = self._p(rel)
        files = self.fs.find(base, detail=True)
        finger = tuple(sorted((k, v.get("size"), str(v.get("ETag") or v.get("mtime") or "")) for k, v in files.items()))
        hit = _LOCAL_COPIES.get(uri)
        if hit and hit[0] == finger and Path(hit[1]).exists():
            return hit[1]
        local = tempfile.mkdtemp(prefix="d2d-copy-")
        for key in files:
            dest = Path(local, posixpath.relpath(key, base))
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(key, str(dest))
        if hit:
            shutil.rmtree(hit[1], ignore_errors=True)
        _LOCAL_COPIES[uri] = (finger, local)
        return local

    def local_file(self, rel: str) -> str:
        """A local path of one file (downloaded into a per-process cache when remote)."""
        if not is_remote(self.root):
            return self.path(rel)
        uri, info = self.path(rel), self.fs.info(self._p(rel))
        finger = (info.get("size"), str(info.get("ETag") or info.get("mtime") or ""))
        hit = _LOCAL_COPIES.get(uri)
        if hit and hit[0] == finger and Path(hit[1]).exists():
            return hit[1]
        local = Path(tempfile.mkdtemp(prefix="d2d-file-"), posixpath.basename(rel))
        self.fs.get_file(self._p(rel), str(local))
        _LOCAL_COPIES[uri] = (finger, str(local))
        return str(local)

    # ------------------------------------------------------------ Ray Train / Tune storage

    def ray_storage(self, rel: str = ".ray_train") -> dict:
        """`RunConfig` keywords that keep Ray Train checkpoints below rel/ on the same store.

        Local: a plain path. Remote: the path without its scheme plus a pyarrow filesystem
        wrapping this fsspec one (so the endpoint and credentials are the ones fsspec uses).
        """
        if not is_remote(self.root):
            return {"storage_path": self.path(rel), "storage_filesystem": None}
        import pyarrow.fs

        return {"storage_path": self._p(rel),
                "storage_filesystem": pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.fs))}

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
