"""RLAIF: preference pairs chosen by a critic (reward model + guardrail scores) under a constitution.

    d2d dpo --config tiny --run-dir runs/demo --pairs-from-critic --constitution my_rules.yaml

For each prompt the policy (the reference actor, which samples) writes two replies; the critic scores
each as the weighted sum of the constitution's principles (pipeline/train/constitution.yaml
is the default) and the higher-scoring reply becomes "chosen". Pairs whose scores are
within `critic_margin`, or whose replies are identical, are set aside and counted.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pipeline.chat.prefs import PrefPair
from pipeline.errors import StageError

DEFAULT_CONSTITUTION = str(Path(__file__).with_name("constitution.yaml"))


def load_constitution(path: str = "") -> dict:
    """Read and check a constitution file: `principles: [{text, scorer, weight}]`."""
    path = path or DEFAULT_CONSTITUTION
    if not os.path.exists(path):
        raise StageError(f"constitution file {path} not found")
    data = yaml.safe_load(open(path)) or {}
    principles = data.get("principles")
    if not isinstance(principles, list) or not principles:
        raise ValueError(f"constitution: {path} needs a non-empty `principles` list")
    for i, p in enumerate(principles):
        scorer = str(p.get("scorer", ""))
        if scorer != "reward_model" and not scorer.startswith("guard:"):
            raise ValueError(f"constitution: principles[{i}].scorer {scorer!r} is not reward_model or guard:NAME")
        if not isinstance(p.get("weight", 1.0), (int, float)):
            raise ValueError(f"constitution: principles[{i}].weight must be a number")
    return {"name": data.get("name", Path(path).stem), "path": path, "principles": principles}


def guard_scores(name: str, prompts: list[list[dict]], replies: list[str]) -> list[float]:
    """A guardrail's score in [0, 1] for each reply (output side, with the user prompt in context)."""
    from guardrails.base import ScanContext
    from guardrails.registry import guard_class

    guard = guard_class(name)()
    out = []
    for msgs, reply in zip(prompts, replies, strict=True):
        user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
        out.append(float(guard.scan(reply, ScanContext(prompt=user, messages=msgs)).score))
    return out


def critic_scores(constitution: dict, prompts: list[list[dict]], replies: list[str], reward_scorer) -> list[float]:
    """Weighted sum over principles of each reply's scorer value (guards count against)."""
    import ray

    total = [0.0] * len(replies)
    for p in constitution["principles"]:
        w = float(p.get("weight", 1.0))
        if p["scorer"] == "reward_model":
            vals = ray.get(reward_scorer.score.remote(prompts, replies))
        else:
            vals = [-v for v in guard_scores(p["scorer"].split(":", 1)[1], prompts, replies)]
        total = [t + w * v for t, v in zip(total, vals, strict=True)]
    return total


def choose(prompt: list[dict], a: str, b: str, sa: float, sb: float, margin: float) -> tuple[PrefPair | None, str]:
    if a.strip() == b.strip():
        return None, "identical_replies"
    if abs(sa - sb) < margin:
        return None, "critic_tie"
    return (PrefPair(prompt, a, b), "") if sa > sb else (PrefPair(prompt, b, a), "")


def critic_pairs(cfg, prompts: list[list[dict]], sampler) -> tuple[list[PrefPair], dict]:
    """Sample two replies per prompt with `sampler` (a ReferenceModel actor of INIT), score them
    with the critic, keep the decided pairs."""
    import ray

    from pipeline.train.rollout import RewardScorer, spawn

    constitution = load_constitution(cfg.constitution)
    from pipeline.runfs import RunDir

    rm_path = cfg.reward_model or RunDir(cfg.run_dir).path("reward")
    uses_rm = any(p["scorer"] == "reward_model" for p in constitution["principles"])
    if uses_rm and not RunDir(rm_path).exists("config.json"):
        raise StageError(f"{rm_path}/config.json not found: run `d2d reward --run-dir {cfg.run_dir}` first")
    first = sampler.generate.remote(prompts, cfg.max_reply_len, cfg.critic_temperature, cfg.seed)
    second = sampler.generate.remote(prompts, cfg.max_reply_len, cfg.critic_temperature, cfg.seed + 1)
    a, b = ray.get([first, second])
    scorer = spawn(RewardScorer, rm_path, num_cpus=cfg.critic_num_cpus) if uses_rm else None
    sa = critic_scores(constitution, prompts, a, scorer)
    sb = critic_scores(constitution, prompts, b, scorer)
    if scorer is not None:
        ray.kill(scorer)
    pairs, reasons = [], {}
    for prompt, x, y, s1, s2 in zip(prompts, a, b, sa, sb, strict=True):
        pair, why = choose(prompt, x, y, s1, s2, cfg.critic_margin)
        if pair is None:
            reasons[why] = reasons.get(why, 0) + 1
        else:
            pairs.append(pair)
    report = {"constitution": constitution["name"], "constitution_path": constitution["path"],
              "prompts": len(prompts), "pairs": len(pairs), "set_aside": reasons,
              "mean_score_gap": sum(abs(x - y) for x, y in zip(sa, sb, strict=True)) / max(len(sa), 1)}
    return pairs, report
