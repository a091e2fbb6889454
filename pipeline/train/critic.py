"""RLAIF: preference pairs chosen under a constitution, as in Constitutional AI's feedback phase.

    d2d dpo --config tiny --run-dir runs/demo --pairs-from-critic --constitution my_rules.yaml

For each prompt the policy (the reference actor, which samples) writes two replies. Each principle
of the constitution (pipeline/train/constitution.yaml is the default) judges the pair with its
scorer, and the weighted sum decides which reply becomes "chosen":
- `judge`: a chat model (`judge_model`, default the policy itself) reads the principle, the
  conversation and both replies, and is asked which reply follows the principle better; the
  preference is P("A") - P("B") of its next token, averaged over both orders of the replies so
  that the position of a reply does not count (the multiple-choice comparison of Bai et al. 2022);
- `reward_model`: RUN/reward's score difference;
- `guard:NAME`: the guardrail's score difference, counted against the reply it flags.
Pairs whose preference is within `critic_margin`, or whose replies are identical, are set aside
and counted.
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
        if scorer not in ("judge", "reward_model") and not scorer.startswith("guard:"):
            raise ValueError(f"constitution: principles[{i}].scorer {scorer!r} is not judge, reward_model or guard:NAME")
        if scorer == "judge" and not str(p.get("text", "")).strip():
            raise ValueError(f"constitution: principles[{i}] is judged by its text, which is empty")
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


JUDGE_QUESTION = (
    "Consider this principle: {principle}\n\nConversation:\n{conversation}\n\n"
    "Reply (A): {a}\n\nReply (B): {b}\n\n"
    "Which reply follows the principle better? Answer with A or B."
)


def judge_messages(principle: str, prompt: list[dict], a: str, b: str) -> list[dict]:
    """The judge's question for one principle and one ordered pair of replies."""
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return [{"role": "user", "content": JUDGE_QUESTION.format(principle=principle.strip(),
                                                             conversation=conversation, a=a, b=b)}]


class ConstitutionalJudge:
    """A chat model asked, per principle, which of two replies follows it better (a Ray actor)."""

    def __init__(self, model_path: str, threads: int = 1):
        import torch
        from transformers import AutoModelForCausalLM

        from pipeline.runfs import local_path
        from pipeline.tokenizer import load_tokenizer

        torch.set_num_threads(max(1, threads))
        model_path = local_path(model_path)  # a remote model folder is downloaded once
        self.tok = load_tokenizer(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        self.choice_ids = [self._answer_id(x) for x in ("A", "B")]

    def _answer_id(self, letter: str) -> int:
        from pipeline.tokenizer import encode_text

        return encode_text(self.tok, letter)[0]

    def _prefer_first(self, messages: list[list[dict]]) -> list[float]:
        """P(A) - P(B) of the judge's first answer token, renormalised over the two letters."""
        import torch

        from pipeline.tokenizer import render_chat

        out = []
        device = next(self.model.parameters()).device
        with torch.no_grad():
            for msgs in messages:
                ids = torch.tensor([render_chat(self.tok, msgs, add_generation_prompt=True)], device=device)
                logits = self.model(input_ids=ids).logits[0, -1, self.choice_ids].float()
                pa, pb = torch.softmax(logits, dim=-1).tolist()
                out.append(pa - pb)
        return out

    def prefer(self, principle: str, prompts: list[list[dict]], a: list[str], b: list[str]) -> list[float]:
        """Preference for `a` over `b` in [-1, 1] per pair, antisymmetric in the two replies."""
        ab = self._prefer_first([judge_messages(principle, p, x, y) for p, x, y in zip(prompts, a, b, strict=True)])
        ba = self._prefer_first([judge_messages(principle, p, y, x) for p, x, y in zip(prompts, a, b, strict=True)])
        return [(u - v) / 2 for u, v in zip(ab, ba, strict=True)]


def critic_preferences(constitution: dict, prompts: list[list[dict]], a: list[str], b: list[str], *,
                       reward_scorer=None, judge=None) -> list[float]:
    """Weighted sum over principles of how much each principle prefers reply `a` to reply `b`."""
    import ray

    total = [0.0] * len(a)
    for p in constitution["principles"]:
        w = float(p.get("weight", 1.0))
        if p["scorer"] == "judge":
            vals = ray.get(judge.prefer.remote(p["text"], prompts, a, b))
        elif p["scorer"] == "reward_model":
            sa, sb = ray.get([reward_scorer.score.remote(prompts, a), reward_scorer.score.remote(prompts, b)])
            vals = [x - y for x, y in zip(sa, sb, strict=True)]
        else:
            name = p["scorer"].split(":", 1)[1]
            vals = [y - x for x, y in zip(guard_scores(name, prompts, a), guard_scores(name, prompts, b), strict=True)]
        total = [t + w * v for t, v in zip(total, vals, strict=True)]
    return total


def choose(prompt: list[dict], a: str, b: str, preference: float, margin: float) -> tuple[PrefPair | None, str]:
    """The pair with the preferred reply first, or the reason it is set aside."""
    if a.strip() == b.strip():
        return None, "identical_replies"
    if abs(preference) < margin or preference == 0:
        return None, "critic_tie"
    return (PrefPair(prompt, a, b), "") if preference > 0 else (PrefPair(prompt, b, a), "")


def critic_pairs(cfg, prompts: list[list[dict]], sampler) -> tuple[list[PrefPair], dict]:
    """Sample two replies per prompt with `sampler` (a ReferenceModel actor of INIT), score them
    with the critic, keep the decided pairs."""
    import ray

    from pipeline.train.rewardmodel import RewardScorer
    from pipeline.train.rollout import spawn

    constitution = load_constitution(cfg.constitution)
    from pipeline.runfs import RunDir

    scorers = {p["scorer"] for p in constitution["principles"]}
    rm_path = cfg.reward_model or RunDir(cfg.run_dir).path("reward")
    if "reward_model" in scorers and not RunDir(rm_path).exists("config.json"):
        raise StageError(f"{rm_path}/config.json not found: run `d2d reward --run-dir {cfg.run_dir}` first")
    first = sampler.generate.remote(prompts, cfg.max_reply_len, cfg.critic_temperature, cfg.seed)
    second = sampler.generate.remote(prompts, cfg.max_reply_len, cfg.critic_temperature, cfg.seed + 1)
    a, b = ray.get([first, second])
    actors = {}
    if "reward_model" in scorers:
        actors["reward_scorer"] = spawn(RewardScorer, rm_path, num_cpus=cfg.critic_num_cpus)
    if "judge" in scorers:
        actors["judge"] = spawn(ConstitutionalJudge, cfg.judge_model or cfg.init_dir(), num_cpus=cfg.critic_num_cpus)
    prefs = critic_preferences(constitution, prompts, a, b, **actors)
    for actor in actors.values():
        ray.kill(actor)
    pairs, reasons = [], {}
    for prompt, x, y, pref in zip(prompts, a, b, prefs, strict=True):
        pair, why = choose(prompt, x, y, pref, cfg.critic_margin)
        if pair is None:
            reasons[why] = reasons.get(why, 0) + 1
        else:
            pairs.append(pair)
    report = {"constitution": constitution["name"], "constitution_path": constitution["path"],
              "scorers": sorted(scorers), "prompts": len(prompts), "pairs": len(pairs), "set_aside": reasons,
              "mean_abs_preference": sum(abs(x) for x in prefs) / max(len(prefs), 1)}
    return pairs, report
