"""Copy a run-directory artifact (a model folder) from its URI to a local folder.

    python -m cluster.fetch s3://bucket/runs/x/sft /models/sft

The KubeRay RayService runs this in an init container on every pod, so each
Serve replica loads the model from local disk. Credentials and the endpoint come
from the usual AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL), which s3fs reads itself; nothing here prints them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def fetch(uri: str, dest: str) -> int:
    """Copy every file under `uri` to `dest` (created); returns the number of files copied."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(uri.rstrip("/"))
    if not fs.isdir(base):
        raise FileNotFoundError(f"{uri}: no such folder (did the stage that makes it finish?)")
    out = Path(dest)
    n = 0
    for src in fs.find(base):
        rel = src[len(base):].lstrip("/")
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(src, str(target))
        n += 1
    if not n:
        raise FileNotFoundError(f"{uri}: the folder is empty")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cluster.fetch", description=__doc__.splitlines()[0])
    p.add_argument("uri", help="source folder: s3://bucket/runs/x/sft, gs://..., or a local path")
    p.add_argument("dest", help="local folder to create")
    args = p.parse_args(argv)
    n = fetch(args.uri, args.dest)
    print(f"fetched {n} files from {args.uri} to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
