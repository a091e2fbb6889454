"""Ray Jobs: run any stage on a remote cluster, and manage submitted jobs.

    d2d submit curate --input s3://bucket/cc/*.warc.gz --run-dir s3://bucket/runs/x \\
        --address http://HEAD:8265 --follow
    d2d jobs list --address http://HEAD:8265
    d2d jobs logs JOB_ID --address http://HEAD:8265 --follow

The job runs the same `d2d STAGE ...` command line on the cluster (`python -m
cluster.cli`), with this source tree as the job's working_dir when run from a
checkout (or the installed package otherwise) and the worker environment of
`cluster.runtime`. A local --run-dir is made absolute: on a real cluster it must
be shared storage (NFS or an object-store URI) for the artifacts to be visible.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path

from cluster.runtime import runtime_env, set_process_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXCLUDES = [".venv", ".git", "runs", "bench", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _client(address: str | None):
    if not address:
        raise ValueError("--address http://HEAD:8265 is required (the cluster's dashboard / Jobs API)")
    set_process_env()
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # the client raises ConnectionError or RuntimeError variants
        raise ConnectionError(f"cannot reach the Ray Jobs API at {address}: {e}") from None


def _absolutize_run_dir(args: list[str]) -> list[str]:
    out = list(args)
    for i, a in enumerate(out):
        if a == "--run-dir" and i + 1 < len(out) and "://" not in out[i + 1]:
            out[i + 1] = str(Path(out[i + 1]).expanduser().absolute())
        elif a.startswith("--run-dir=") and "://" not in a:
            out[i] = "--run-dir=" + str(Path(a.split("=", 1)[1]).expanduser().absolute())
    return out


def job_runtime_env(working_dir: str | None) -> dict:
    extra = {}
    if working_dir:
        extra = {"working_dir": working_dir, "excludes": EXCLUDES}
    elif (PROJECT_ROOT / "pyproject.toml").exists() and (PROJECT_ROOT / "cluster").is_dir():
        extra = {"working_dir": str(PROJECT_ROOT), "excludes": EXCLUDES}
    return runtime_env(**extra)


def submit_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="d2d submit", add_help=False)
    p.add_argument("stage")
    p.add_argument("--address")
    p.add_argument("--follow", action="store_true")
    p.add_argument("--job-id", help="submission id (default: generated)")
    p.add_argument("--working-dir", help="code to ship (default: this checkout)")
    p.add_argument("--num-cpus", type=float, help="CPUs reserved for the job's driver")
    p.add_argument("--num-gpus", type=float, help="GPUs reserved for the job's driver")
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: d2d submit STAGE [stage options] --address http://HEAD:8265 [--follow] "
              "[--job-id ID] [--working-dir DIR]")
        return 0
    args, stage_args = p.parse_known_args(argv)
    from cluster.stages import STAGES

    if args.stage not in STAGES:
        raise ValueError(f"unknown stage {args.stage!r}; stages: {', '.join(STAGES)}")
    if "--address" in stage_args:
        raise ValueError("give --address once: it is the Jobs API address of the cluster")
    stage_args = _absolutize_run_dir(stage_args)
    entrypoint = " ".join(shlex.quote(a) for a in ["python", "-m", "cluster.cli", args.stage, *stage_args])
    client = _client(args.address)
    kwargs = {}
    if args.num_cpus is not None:
        kwargs["entrypoint_num_cpus"] = args.num_cpus
    if args.num_gpus is not None:
        kwargs["entrypoint_num_gpus"] = args.num_gpus
    job_id = client.submit_job(
        entrypoint=entrypoint,
        submission_id=args.job_id,
        runtime_env=job_runtime_env(args.working_dir),
        **kwargs,
    )
    print(f"submitted job {job_id}: {entrypoint}")
    if not args.follow:
        print(f"follow with: d2d jobs logs {job_id} --follow --address {args.address}")
        return 0
    return _follow(client, job_id)


def _follow(client, job_id: str) -> int:
    async def tail():
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    status = str(client.get_job_status(job_id)).split(".")[-1]
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def jobs_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="d2d jobs")
    p.add_argument("action", choices=["list", "status", "logs", "stop"])
    p.add_argument("job_id", nargs="?")
    p.add_argument("--address", required=False)
    p.add_argument("--follow", action="store_true", help="with logs: stream until the job ends")
    args = p.parse_args(argv)
    client = _client(args.address)
    if args.action == "list":
        for job in client.list_jobs():
            status = str(job.status).split(".")[-1]
            print(f"{job.submission_id or job.job_id}\t{status}\t{job.entrypoint}")
        return 0
    if not args.job_id:
        raise ValueError(f"d2d jobs {args.action} needs a JOB_ID")
    if args.action == "status":
        status = str(client.get_job_status(args.job_id)).split(".")[-1]
        print(status)
        return 0 if status != "FAILED" else 1
    if args.action == "logs":
        if args.follow:
            return _follow(client, args.job_id)
        print(client.get_job_logs(args.job_id), end="")
        return 0
    stopped = client.stop_job(args.job_id)
    print(f"job {args.job_id}: {'stop requested' if stopped else 'already finished'}")
    return 0
