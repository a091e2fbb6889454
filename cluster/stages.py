"""The registry of `d2d` stages: name -> config class, run function, whether it needs Ray.

Imports are lazy (strings), so `d2d --help` stays fast and a stage's heavy
dependencies load only when that stage runs. Only stages that work are listed.
A stage's run function takes its config object and returns what it wrote (a path,
or a dict of figures with an `artifacts` key); the CLI prints it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    config: str
    """`module:Class` of the stage's config dataclass."""
    run: str
    """`module:function` taking the config object."""
    needs_ray: bool = True
    """Connect to Ray (embedded or --address) before calling run."""
    positionals: tuple[str, ...] = ()
    """Config fields filled, in order, by positional arguments (`d2d guard scan "text"`)."""
    config_field: str = ""
    """If set, `--config X` fills this field instead of naming a preset or file (`d2d run --config demo`)."""

    def load_config_class(self) -> type:
        return _load(self.config)

    def load_run(self):
        return _load(self.run)


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        # Stages register here, in lifecycle order, once they work end to end.
        Stage("crawl", "polite crawler on Ray: seeds file -> WARC files + fetch log (RUN/crawl)",
              "pipeline.acquire.crawler:CrawlConfig", "pipeline.acquire.crawler:run"),
        Stage("curate", "crawl files -> filtered, deduplicated, PII-free parquet (Ray Data)",
              "pipeline.curate.config:CurateConfig", "pipeline.curate.run:run", needs_ray=True),
        Stage("curate-quality-train", "train a fastText quality classifier (good vs crawl text) for curate's quality_model",
              "pipeline.curate.quality:QualityTrainConfig", "pipeline.curate.quality:run", needs_ray=False),
        Stage("tokenizer", "train the byte-level BPE tokenizer with ChatML tokens (RUN/tokenizer)",
              "pipeline.tokenizer:TokenizerConfig", "pipeline.tokenizer:run", needs_ray=False),
        Stage("tokenize", "tokenize and pack curated text into fixed-length shards on Ray Data (RUN/tokens)",
              "pipeline.shards:TokenizeConfig", "pipeline.shards:run"),
        Stage("pretrain", "pretrain the base model on the token shards with Ray Train (RUN/base); --tune for a Ray Tune sweep",
              "pipeline.train.pretrain:PretrainConfig", "pipeline.train.pretrain:run"),
        Stage("generate", "stream a continuation of --prompt from a model folder (`d2d generate --model RUN/base`)",
              "pipeline.train.generate:GenerateConfig", "pipeline.train.generate:run", needs_ray=False),
        Stage("sft", "supervised fine-tuning: base model -> assistant on ChatML conversations (RUN/sft)",
              "pipeline.train.sft:SFTConfig", "pipeline.train.sft:run"),
        Stage("eval", "evaluate a chat model: val loss, stop rate, held-out arithmetic (MODEL/eval.json)",
              "pipeline.train.evaluate:EvalConfig", "pipeline.train.evaluate:run"),
        Stage("prefs", "preference pairs (HH file, TRL file, or generated `demo`) -> RUN/prefs/pairs.jsonl",
              "pipeline.chat.prefs_stage:PrefsConfig", "pipeline.chat.prefs_stage:run", needs_ray=False),
        Stage("reward", "Bradley-Terry reward model on preference pairs (RUN/reward); `d2d reward score` scores replies",
              "pipeline.train.reward:RewardConfig", "pipeline.train.reward:run", positionals=("action",)),
        Stage("ppo", "RLHF with PPO: policy+value learners, reference and reward actors, KL control (RUN/ppo)",
              "pipeline.train.ppo:PPOConfig", "pipeline.train.ppo:run"),
        Stage("dpo", "direct preference optimisation on pairs or critic-built (RLAIF) pairs (RUN/dpo)",
              "pipeline.train.dpo:DPOConfig", "pipeline.train.dpo:run"),
        Stage("grpo", "GRPO with verifiable rewards on arithmetic / GSM8K, held-out accuracy before/after (RUN/grpo)",
              "pipeline.train.grpo:GRPOConfig", "pipeline.train.grpo:run"),
        Stage("chat", "interactive terminal chat with a model folder or an OpenAI-compatible server",
              "pipeline.chat_cli:ChatConfig", "pipeline.chat_cli:run", needs_ray=False),
        Stage("guard", "scan a text with the guardrail chain, or evaluate guards on a dataset (`d2d guard scan TEXT`)",
              "guardrails.cli:GuardStageConfig", "guardrails.cli:run", needs_ray=False,
              positionals=("action", "text")),
        Stage("serve", "serve a chat model on Ray Serve: OpenAI API + SSE, guardrails, web page (foreground)",
              "serving.config:ServeConfig", "serving.serve_cli:run", needs_ray=True),
        Stage("report", "write the run's report card RUN/report.md with plots, from its metrics files",
              "pipeline.report:ReportConfig", "pipeline.report:run", needs_ray=False),
        Stage("run", "run a whole lifecycle recipe, skipping finished stages (`d2d run --config demo`)",
              "cluster.recipe:RunConfig", "cluster.recipe:run", config_field="recipe"),
        Stage("bench", "run a stage's benchmark and print its figures (`d2d bench all`)",
              "cluster.bench:BenchConfig", "cluster.bench:run",
              positionals=("target",)),
    ]
}
