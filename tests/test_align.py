"""Alignment stages end to end on a real local Ray with a tiny random model: artifacts, RLAIF, resume.

Each stage runs a few steps on a tiny Llama + in-process tokenizer written as RUN/sft,
and must leave an HF model folder, metrics.jsonl, plots and its eval.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.config import build_config

pytestmark = pytest.mark.usefixtures("ray_local")

FAST = {"checkpoint_every": 2, "cpus_per_worker": 1}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """RUN/sft (tiny random Llama + tokenizer + sft.json) and a small preference file."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.tokenizer import save_tokenizer, tiny_tokenizer

    run = tmp_path_factory.mktemp("align") / "run"
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(run / "sft")
    save_tokenizer(tok, str(run / "sft"))
    (run / "sft" / "sft.json").write_text(json.dumps({"arithmetic": {"ops": "+", "lo": 0, "hi": 20}, "system_prompt": ""}))
    (run / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in style_pairs(240)))
    return run


POLITE = "thank glad happy sure gladly welcome kind helpful clear friendly".split()
RUDE = "no never stop away rude useless wrong bored annoyed refuse".split()


def style_pairs(n: int, seed: int = 0) -> list[dict]:
    """Pairs that differ in style, not in length or form: both replies are six words drawn from both
    word sets, four from one and two from the other, in random order; the preferred one leans polite.
    Held-out prompts (split by hash) carry word combinations the model never saw."""
    import random

    rng = random.Random(seed)

    def reply(major: list[str], minor: list[str]) -> str:
        words = rng.sample(major, 4) + rng.sample(minor, 2)
        rng.shuffle(words)
        return " ".join(words) + "."

    topics = "bread river music garden travel letters chess paint coffee stars".split()
    return [{"prompt": f"Tell me about {rng.choice(topics)} number {i}.", "chosen": reply(POLITE, RUDE),
             "rejected": reply(RUDE, POLITE)} for i in range(n)]


def _artifacts(folder: Path, eval_keys: tuple[str, ...]) -> dict:
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert (folder / "tokenizer.json").exists()
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert list(folder.glob("*.png"))
    ev = json.loads((folder / "eval.json").read_text())
    for k in eval_keys:
        assert 0.0 <= ev[k] <= 1.0, (k, ev[k])
    return ev


@pytest.fixture(scope="module")
def reward_run(tiny_run, _ray_session) -> Path:
    from pipeline.train.reward import RewardConfig, run

    cfg = build_config(RewardConfig, "tiny", {**FAST, "run_dir": str(tiny_run), "pairs": str(tiny_run / "pairs.jsonl"),
                                              "max_steps": 30, "checkpoint_every": 30, "batch_size": 8, "lr": 3e-3,
                                              "max_len": 48, "heldout_fraction": 0.2, "eval_n": 48})
    out = run(cfg)
    assert out["heldout_pairs"] > 0
    return tiny_run


def test_reward_model_trains_saves_and_scores(reward_run):
    from transformers import AutoModelForSequenceClassification

    from pipeline.train.reward import RewardConfig, run

    ev = _artifacts(reward_run / "reward", ("heldout_accuracy",))
    assert ev["heldout_accuracy"] >= 0.8  # chance is 0.5; held-out prompts and word combinations
    assert AutoModelForSequenceClassification.from_pretrained(reward_run / "reward").config.num_labels == 1
    cfg = build_config(RewardConfig, None, {"action": "score", "model": str(reward_run / "reward"),
                                            "prompt": "what is 2 + 1?", "response": "The answer is 3."})
    scores = run(cfg)["scores"]
    assert len(scores) == 1 and isinstance(scores[0], float)


def test_ppo_writes_policy_metrics_and_kl(reward_run):
    from pipeline.train.ppo import PPOConfig, run

    cfg = build_config(PPOConfig, "tiny", {**FAST, "run_dir": str(reward_run), "prompts": str(reward_run / "pairs.jsonl"),
                                           "max_steps": 3, "prompts_per_step": 4, "max_new_tokens": 8,
                                           "minibatch_size": 4, "reward_num_cpus": 0.5})
    out = run(cfg)
    ev = _artifacts(reward_run / "ppo", ())
    rows = [json.loads(x) for x in (reward_run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward", "kl", "beta", "entropy", "response_length", "clip_frac", "value_loss"):
        assert key in rows[-1]
    assert ev["kl_target"] == cfg.kl_target and out["artifacts"].endswith("ppo")


def test_dpo_learns_the_preferred_style_on_heldout_pairs(reward_run):
    from pipeline.train.dpo import DPOConfig, run

    cfg = build_config(DPOConfig, "tiny", {**FAST, "run_dir": str(reward_run), "pairs": str(reward_run / "pairs.jsonl"),
                                           "out": "dpo_pairs", "max_steps": 30, "checkpoint_every": 30,
                                           "batch_size": 8, "lr": 3e-3, "heldout_fraction": 0.2, "eval_n": 48})
    out = run(cfg)
    ev = _artifacts(reward_run / "dpo_pairs", ("heldout_reward_accuracy",))
    assert out["heldout_reward_accuracy"] == ev["heldout_reward_accuracy"] >= 0.8  # chance is 0.5


@pytest.fixture(scope="module")
def dpo_run(reward_run, tmp_path_factory) -> tuple[Path, dict]:
    from pipeline.train.dpo import DPOConfig, run

    constitution = tmp_path_factory.mktemp("critic") / "constitution.yaml"
    constitution.write_text("name: test\nprinciples:\n  - text: prefer what the reward model prefers\n"
                            "    scorer: reward_model\n    weight: 1.0\n  - text: no secrets\n"
                            "    scorer: guard:secrets\n    weight: 1.0\n  - text: choose the more helpful reply\n"
                            "    scorer: judge\n    weight: 1.0\n")
    cfg = build_config(DPOConfig, "tiny", {**FAST, "run_dir": str(reward_run), "pairs": str(reward_run / "pairs.jsonl"),
                                           "pairs_from_critic": True, "critic_prompts": 16, "critic_margin": 0.0,
                                           "constitution": str(constitution), "max_steps": 3, "batch_size": 4,
                                           "max_reply_len": 12})
    return reward_run, run(cfg)


def test_dpo_on_pairs_built_by_the_critic(dpo_run):
    run_dir, out = dpo_run
    ev = _artifacts(run_dir / "dpo", ("heldout_reward_accuracy",))
    critic = ev["data"]["critic"]
    assert critic["constitution"] == "test" and critic["prompts"] == 16
    assert critic["scorers"] == ["guard:secrets", "judge", "reward_model"]
    assert critic["pairs"] + sum(critic["set_aside"].values()) == 16
    assert out["heldout_reward_accuracy"] == ev["heldout_reward_accuracy"]
    # The chat defaults SFT taught travel with the policy, with the chain it descends from.
    carried = json.loads((run_dir / "dpo" / "sft.json").read_text())
    assert carried["arithmetic"] == {"ops": "+", "lo": 0, "hi": 20} and carried["chain"] == [str(run_dir / "sft")]


# GRPO starts from DPO's policy: the chain sft -> dpo -> grpo.
GRPO_TINY = {**FAST, "max_steps": 4, "checkpoint_every": 1, "prompts_per_step": 2, "group_size": 2,
             "max_new_tokens": 6, "eval_n": 8}
TIMING = ("step_s",)  # the only clock readings in metrics.jsonl


@pytest.fixture(scope="module")
def grpo_resumed(dpo_run) -> Path:
    """GRPO from RUN/dpo whose learner is killed at step 2 and resumed from the step-2 checkpoint."""
    from pipeline.train.grpo import GRPOConfig, run

    run_dir = dpo_run[0]
    run(build_config(GRPOConfig, "tiny", {**GRPO_TINY, "run_dir": str(run_dir), "init": str(run_dir / "dpo"),
                                          "fail_at_step": 2, "max_failures": 1}))
    return run_dir / "grpo"


def test_grpo_resumes_after_a_killed_learner(grpo_resumed):
    ev = _artifacts(grpo_resumed, ("accuracy_before", "accuracy_after"))
    assert ev["heldout_problems"] == 8
    run_dir = grpo_resumed.parent
    # sft -> dpo -> grpo, each measured on the same held-out problems; the last one is served.
    assert [c["model"] for c in ev["chain_accuracy"]] == [str(run_dir / n) for n in ("sft", "dpo", "grpo")]
    assert ev["chain_accuracy"][-1]["accuracy"] == ev["accuracy_after"]
    assert (run_dir / ".d2d" / "serve_model").read_text().strip() == str(grpo_resumed)
    events = [json.loads(x) for x in (grpo_resumed / "events.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert resumed == [{"event": "resumed", "step": 2, "time": resumed[0]["time"]}]


def test_grpo_on_a_loaded_machine_takes_the_same_steps_to_the_same_result(grpo_resumed):
    """Budgets are steps: a run uninterrupted but with both cores busy gives the resumed run's rows."""
    import subprocess
    import sys

    from pipeline.train.grpo import GRPOConfig, run

    # Bounded busy loops (they exit on their own after 300 s if the test dies first).
    spin = "import time\nt=time.time()\nwhile time.time()-t<300: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        run(build_config(GRPOConfig, "tiny", {**GRPO_TINY, "run_dir": str(grpo_resumed.parent),
                                              "init": str(grpo_resumed.parent / "dpo"), "out": "grpo_loaded"}))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    rows = lambda d: [{k: v for k, v in json.loads(x).items() if k not in TIMING}  # noqa: E731
                      for x in (d / "metrics.jsonl").read_text().splitlines()]
    loaded = grpo_resumed.parent / "grpo_loaded"
    assert rows(loaded) == rows(grpo_resumed) and len(rows(loaded)) == 4
    a, b = (json.loads((d / "eval.json").read_text()) for d in (loaded, grpo_resumed))
    assert (a["accuracy_before"], a["accuracy_after"]) == (b["accuracy_before"], b["accuracy_after"])
