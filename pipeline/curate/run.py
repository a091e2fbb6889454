"""`d2d curate`: crawl files to clean, deduplicated, PII-free parquet on Ray Data.

    .venv/bin/d2d curate --input '../shared/data/web/*.warc.gz' --run-dir runs/demo

Phase 1, per shard (a few input files, one Ray task each): read -> URL filter ->
extract -> language -> Gopher repetition -> Gopher quality -> C4 -> FineWeb ->
content safety; each shard's survivors and stats are committed atomically under
RUN/curated/.shards/ (the stats file is the commit marker), so a rerun skips them.
Phase 2, global: exact dedup, MinHash near-dedup, PII removal (Presidio actor
pool), then RUN/curated/part-*.parquet sorted by document key, .stats.json and
.manifest.json. Phase 2 reads only committed shards, so a killed-and-rerun run
writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import time
import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.curate.config import CurateConfig
from pipeline.curate.readers import doc_key, expand_inputs, read_file
from pipeline.curate.steps import _size, merge_stats, new_stats, plain_stats, run_steps
from pipeline.errors import StageError
from pipeline.runfs import RunDir

SHARD_SCHEMA = pa.schema([
    ("id", pa.string()), ("doc_key", pa.int64()), ("url", pa.string()), ("source", pa.string()),
    ("text", pa.string()), ("lang", pa.string()), ("lang_score", pa.float64()), ("n_words", pa.int64()),
    ("mean_word_length", pa.float64()), ("c4_lines_kept_frac", pa.float64()), ("badword_ratio", pa.float64()),
    ("text_bytes", pa.int64()),
])
REJECT_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("step", pa.string()),
                           ("reason", pa.string()), ("text", pa.string())])
#: Part of the fingerprint: bump it when a step's output changes for the same config (e.g. the
#: extractor's options), so a rerun recomputes shards written by older code instead of reusing them.
STEPS_VERSION = 4
#: Fields that change how work is spread, not what comes out: left out of the fingerprint.
_NO_FP = {"run_dir", "ray_remote_args", "crawl", "num_cpus_per_task", "pii_actors", "pii_batch_size", "fetch_retries",
          "fetch_backoff_s", "shuffle_partitions", "keep_rejects"}


def shard_schema(cfg: CurateConfig) -> pa.Schema:
    """The shard columns; `quality_score` only when the quality step runs (an all-null column would
    come back as NaN, which never equals itself, from the pandas-backed phase 2)."""
    return SHARD_SCHEMA.append(pa.field("quality_score", pa.float64())) if cfg.quality_model else SHARD_SCHEMA


def build_steps(cfg: CurateConfig) -> list:
    from pipeline.curate.extract import HtmlExtractor
    from pipeline.curate.filters import (
        C4QualityFilter,
        ContentSafetyFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        URLFilter,
    )
    from pipeline.curate.langid import LanguageFilter
    from pipeline.curate.quality import QualityScorer

    steps = [
        URLFilter.from_config(cfg),
        HtmlExtractor(cfg.extractor, cfg.extract_timeout_s),
        LanguageFilter(cfg.languages, cfg.lang_threshold),
        GopherRepetitionFilter(cfg.gopher_dup_line_frac, cfg.gopher_dup_para_frac, cfg.gopher_dup_line_char_frac,
                               cfg.gopher_dup_para_char_frac, cfg.gopher_top_ngram_fracs, cfg.gopher_dup_ngram_fracs),
        GopherQualityFilter(cfg.gopher_min_words, cfg.gopher_max_words, cfg.gopher_min_avg_word_length,
                            cfg.gopher_max_avg_word_length, cfg.gopher_max_symbol_word_ratio,
                            cfg.gopher_max_bullet_lines_ratio, cfg.gopher_max_ellipsis_lines_ratio,
                            cfg.gopher_max_non_alpha_words_ratio, cfg.gopher_min_stop_words),
        C4QualityFilter(cfg.c4_min_words_per_line, cfg.c4_max_word_length, cfg.c4_min_sentences),
        FineWebQualityFilter(cfg.fineweb_line_punct_thr, cfg.fineweb_short_line_thr, cfg.fineweb_short_line_length,
                             cfg.fineweb_char_dup_ratio, cfg.fineweb_new_line_ratio),
        ContentSafetyFilter.from_config(cfg),
    ]
    quality = QualityScorer.from_config(cfg)  # off unless a classifier is configured
    return steps + [quality] if quality is not None else steps


def _quality_top_fraction(kept: list[dict], steps: list, stats: dict, rejects: list | None) -> list[dict]:
    """With `quality_top_fraction`, the quality step keeps the best share of each shard's survivors."""
    quality = next((s.step for s in steps if s.name == "quality"), None)
    if quality is None or not quality.top_fraction or not kept:
        return kept
    keep, drop = quality.filter_batch(kept)
    s = stats["quality"]
    s["docs_out"] -= len(drop)
    s["bytes_out"] -= sum(_size(d) for d in drop)
    s["dropped"]["quality_below_top_fraction"] += len(drop)
    if rejects is not None:
        rejects += [{"id": d["id"], "url": d.get("url", ""), "step": "quality", "reason": "quality_below_top_fraction",
                     "text": d["text"][:100_000]} for d in drop]
    return keep


class _CpuTimed:
    """A step that adds the CPU-seconds of this process spent in it to `cpu[name]`: wall seconds, which
    run_steps counts, grow with whatever else runs on the node; CPU-seconds say where this stage's work goes."""

    def __init__(self, step, cpu: dict):
        self.step, self.name, self.cpu = step, step.name, cpu

    def __call__(self, doc):
        t0 = time.process_time()
        try:
            return self.step(doc)
        finally:
            self.cpu[self.name] = self.cpu.get(self.name, 0.0) + time.process_time() - t0


def filter_files(files: list[str], cfg: CurateConfig, rejects: list | None = None) -> tuple[list[dict], dict]:
    """Phase 1 on some files, without Ray: surviving documents and per-step stats (with `cpu_s` per step)."""
    stats = {"read": new_stats()}
    cpu: dict = {"read": 0.0}
    steps = [_CpuTimed(s, cpu) for s in build_steps(cfg)]
    kept: list[dict] = []
    for path in files:
        batch = []
        c0, t0 = time.process_time(), time.perf_counter()
        for doc, reason in read_file(path, cfg.max_record_bytes, cfg.fetch_retries, cfg.fetch_backoff_s):
            stats["read"]["docs_in"] += 1
            if doc is None:
                stats["read"]["dropped"][reason] += 1
                continue
            stats["read"]["docs_out"] += 1
            stats["read"]["bytes_out"] += len(doc["raw"])
            stats["read"]["bytes_in"] += len(doc["raw"])
            batch.append(doc)
        cpu["read"] += time.process_time() - c0
        stats["read"]["seconds"] += time.perf_counter() - t0
        kept += run_steps(batch, steps, stats, rejects)
    kept = _quality_top_fraction(kept, steps, stats, rejects)
    for d in kept:
        d["doc_key"] = doc_key(d["id"])
        d["text_bytes"] = len(d["text"].encode())
    for name, c in cpu.items():
        stats[name]["cpu_s"] = c
    return kept, stats


def _merge_cpu(into: dict, other: dict) -> None:
    # merge_stats sums the counters every stage has; CPU-seconds exist for phase-1 steps only
    for name, s in other.items():
        if "cpu_s" in s:
            into[name]["cpu_s"] = round(into[name].get("cpu_s", 0.0) + s["cpu_s"], 3)


def _write_table(rd: RunDir, rel: str, table: pa.Table) -> None:
    """Atomic parquet write: temp file then rename."""
    target = rd._p(rel)
    rd.fs.makedirs(posixpath.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    with rd.fs.open(tmp, "wb") as f:
        pq.write_table(table, f)
    rd.fs.mv(tmp, target)


def _process_shards(batch: dict, cfg_dict: dict, root: str) -> dict:
    """Ray task body: filter one shard's files and commit its outputs."""
    import ray

    cfg = CurateConfig(**cfg_dict)
    rd = RunDir(root)
    names = []
    for name, files_json in zip(batch["name"], batch["files"], strict=True):
        rejects: list | None = [] if cfg.keep_rejects else None
        kept, stats = filter_files(json.loads(files_json), cfg, rejects)
        schema = shard_schema(cfg)
        rows = {f.name: [d.get(f.name) for d in kept] for f in schema}
        _write_table(rd, f"curated/.shards/{name}.parquet", pa.Table.from_pydict(rows, schema=schema))
        if rejects is not None:
            _write_table(rd, f"curated/.rejects/{name}.parquet", pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
        node = ray.get_runtime_context().get_node_id()
        rd.write_json(f"curated/.shards/{name}.json", {"stats": plain_stats(stats), "node": node, "docs": len(kept)})
        names.append(name)
    return {"name": names}


def fingerprint(cfg: CurateConfig, files: list[str]) -> str:
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NO_FP}
    blob = json.dumps([STEPS_VERSION, fields, files], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def plan_shards(cfg: CurateConfig, files: list[str]) -> list[dict]:
    fp = fingerprint(cfg, files)
    k = cfg.files_per_shard
    return [{"name": f"shard-{i // k:05d}-{fp}", "files": json.dumps(files[i:i + k])} for i in range(0, len(files), k)]


def run_phase1(cfg: CurateConfig, rd: RunDir, shards: list[dict]) -> list[str]:
    import ray

    pending = [s for s in shards if not rd.exists(f"curated/.shards/{s['name']}.json")]
    if pending:
        # Ray tasks retry 3 times by default (a lost node included); named arguments
        # avoid Ray Data's deprecated **ray_remote_args path for the common keys.
        remote = dict(cfg.ray_remote_args)
        ds = ray.data.from_items(pending, override_num_blocks=len(pending))
        ds.map_batches(_process_shards, batch_size=1, fn_kwargs={"cfg_dict": dataclasses.asdict(cfg), "root": rd.root},
                       num_cpus=cfg.num_cpus_per_task, **remote).materialize()
    return [s["name"] for s in pending]


def _tally(batch):
    return batch.groupby("_drop", as_index=False).agg(docs=("_drop", "size"), bytes=("text_bytes", "sum"))


def _dedup_stats(cfg: CurateConfig, marked, figures: dict) -> dict:
    """stats.json entries of exact and near dedup, from one pass over the marked documents."""
    rows = marked.select_columns(["_drop", "text_bytes"]).map_batches(_tally, batch_format="pandas").to_pandas()
    by = rows.groupby("_drop")[["docs", "bytes"]].sum()
    docs = {r: int(by["docs"].get(r, 0)) for r in ("", "exact_duplicate", "near_duplicate")}
    size = {r: int(by["bytes"].get(r, 0)) for r in docs}
    figures = dict(figures)
    seconds = {"exact_dedup": figures.pop("exact_seconds"), "near_dedup": figures.pop("near_seconds")}
    stats, n_in, b_in = {}, sum(docs.values()), sum(size.values())
    for name, reason in (("exact_dedup", "exact_duplicate"), ("near_dedup", "near_duplicate")):
        if name == "exact_dedup" and not cfg.exact_dedup:
            continue
        s = new_stats()
        s.update(docs_in=n_in, bytes_in=b_in, docs_out=n_in - docs[reason], bytes_out=b_in - size[reason],
                 dropped=Counter({reason: docs[reason]} if docs[reason] else {}), seconds=seconds[name])
        if name == "near_dedup":
            s.update(figures)
        stats[name] = s
        n_in, b_in = s["docs_out"], s["bytes_out"]
    return stats


def run_phase2(cfg: CurateConfig, rd: RunDir, shards: list[dict]) -> tuple[dict, list[str]]:
    import ray
    from ray.data import ActorPoolStrategy
    from ray.data.expressions import col

    from pipeline.curate.dedup import dedup
    from pipeline.curate.pii import PIIRedactor

    paths = [rd.path(f"curated/.shards/{s['name']}.parquet") for s in shards]
    docs = ray.data.read_parquet(paths, override_num_blocks=max(2, cfg.shuffle_partitions)).materialize()
    stats: dict = {}
    rejected = []
    if docs.count():
        marked, figures = dedup(docs, cfg)
        stats.update(_dedup_stats(cfg, marked, figures))
        if cfg.keep_rejects:
            rejected.append(marked.filter(expr=col("_drop") != ""))
        docs = marked.filter(expr=col("_drop") == "").drop_columns(["_drop"]).materialize()
    else:
        docs = docs.map_batches(lambda b: b.assign(dup_cluster_size=1), batch_format="pandas")
    t0 = time.time()
    n = docs.count()
    if n:
        docs = docs.repartition(max(1, min(n, cfg.pii_actors * 4))).map_batches(
            PIIRedactor, fn_constructor_kwargs=dict(mode=cfg.pii_mode, model=cfg.pii_model, entities=cfg.pii_entities,
                                                    score_threshold=cfg.pii_score_threshold,
                                                    replacement=cfg.pii_replacement, ner=cfg.pii_ner),
            compute=ActorPoolStrategy(size=cfg.pii_actors), batch_size=cfg.pii_batch_size, batch_format="numpy",
            num_cpus=min(1.0, cfg.num_cpus_per_task)).materialize()
    by_type: Counter = Counter()
    if n:
        for c in docs.select_columns(["pii_counts"]).take_all():
            by_type.update(json.loads(c["pii_counts"]))
    stats["pii"] = {**new_stats(), "docs_in": n, "docs_out": n, "seconds": time.time() - t0,
                    "entities_removed": dict(sorted(by_type.items())), "mode": cfg.pii_mode}
    return stats, _write_output(cfg, rd, docs if n else None, rejected)


def _write_output(cfg, rd: RunDir, docs, rejected) -> list[str]:
    """Sorted by doc_key, 50,000 rows a file, through temp names, so reruns write identical bytes."""
    for old in rd.glob("curated/part-*.parquet"):
        rd.fs.rm(old)
    written = []
    if docs is not None:
        docs = docs.drop_columns(["text_bytes"]).sort("doc_key")
        for i, batch in enumerate(docs.iter_batches(batch_size=50_000, batch_format="pyarrow")):
            rel = f"curated/part-{i:05d}.parquet"
            _write_table(rd, rel, batch)
            written.append(rd.path(rel))
    if rejected:
        table = pa.concat_tables([pa.Table.from_pandas(r.select_columns(["id", "url", "text", "_drop"]).to_pandas(),
                                                       preserve_index=False) for r in rejected])
        _write_table(rd, "curated/.rejects/dedup.parquet", table.rename_columns(["id", "url", "text", "reason"]))
    return written


def run(cfg: CurateConfig) -> dict:
    if not cfg.inputs():
        raise StageError("no --input given: name WARC/WET/ARC, JSONL or parquet files, globs, dirs or URIs")
    rd = RunDir(cfg.run_dir)
    t0 = time.time()
    files = expand_inputs(cfg.inputs(), cfg.cc_base_url, cfg.fetch_retries, cfg.fetch_backoff_s, cfg.run_dir,
                          cfg.crawl)
    shards = plan_shards(cfg, files)
    names = [s["name"] for s in shards]
    done = rd.read_json("curated/.manifest.json") if rd.exists("curated/.manifest.json") else {}
    if done.get("shards") == names and done.get("complete"):
        return {"artifacts": rd.path("curated"), "skipped": "already complete", "docs_out": done.get("docs_out")}
    rd.write_json("curated/.shards/manifest.json", {"shards": shards})
    ran = run_phase1(cfg, rd, shards)
    stats: dict = {}
    nodes = Counter()
    for s in shards:
        info = rd.read_json(f"curated/.shards/{s['name']}.json")
        merge_stats(stats, info["stats"])
        _merge_cpu(stats, info["stats"])
        nodes[info["node"]] += 1
    stats = plain_stats(stats)
    phase2, written = run_phase2(cfg, rd, shards)
    stats.update({k: {**v, "seconds": round(v["seconds"], 3), "dropped": dict(v["dropped"])} for k, v in phase2.items()})
    docs_out = stats["pii"]["docs_out"]
    read = stats.get("read", {})
    summary = {"files": len(files), "shards": len(shards), "shards_run_now": len(ran), "docs_read": read.get("docs_in", 0),
               "docs_out": docs_out, "bad_records": read.get("dropped", {}), "shard_nodes": len(nodes),
               "wall_s": round(time.time() - t0, 2)}
    # Dot-prefixed metadata and work folders: pandas, pyarrow, Ray Data and HF datasets skip them, so
    # the folder reads as a parquet dataset as it is. `nodes`: shards per Ray node id.
    rd.write_json("curated/.stats.json", {"summary": summary, "stages": stats, "nodes": dict(nodes)})
    rd.write_json("curated/.manifest.json", {"shards": names, "files": written, "complete": True, "docs_out": docs_out})
    return {"artifacts": rd.path("curated"), **summary}
