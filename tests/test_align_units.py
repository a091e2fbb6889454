"""Alignment building blocks without Ray: preference data, KV-cache sampling, critic choice, configs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import shared

from pipeline.chat import prefs


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg).eval(), tok


def test_hh_converter_on_the_real_file(tmp_path):
    src = shared("prefs/hh_rlhf_harmless_base_test.jsonl.gz")
    stats = prefs.convert(src, tmp_path)
    assert stats["pairs"] + sum(stats["rejected"].values()) == 2312  # every row is kept or counted
    assert stats["train"] + stats["heldout"] == stats["pairs"]
    assert 0.05 < stats["heldout"] / stats["pairs"] < 0.15
    row = json.loads((tmp_path / "train.jsonl").open().readline())
    assert row["prompt"][0]["role"] == "user" and row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant" and row["chosen"][0]["content"] != row["rejected"][0]["content"]
    again = prefs.load_pairs(tmp_path / "train.jsonl")  # our own output reads back unchanged
    assert len(again.pairs) == stats["train"] and not again.rejects
    held = {json.dumps(p.prompt) for p in prefs.load_pairs(tmp_path / "heldout.jsonl").pairs}
    assert not held & {json.dumps(p.prompt) for p in again.pairs}


def test_hh_transcript_parsing_and_reasons():
    pair, why = prefs.from_hh({"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"})
    assert why == "" and pair.prompt == [{"role": "user", "content": "hi"}] and pair.chosen == "hello!"
    assert prefs.from_hh({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: x\n\nAssistant: c"})[1] == "hh_prompts_differ"
    assert prefs.from_hh({"chosen": "no turns", "rejected": "no turns"})[1] == "hh_not_a_transcript"
    assert prefs.from_row({"prompt": "q", "chosen": "a", "rejected": "a"})[1] == "identical_replies"
    assert prefs.from_row({"messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"})[0].chosen == "a"
    assert prefs.from_row({"chosen": [{"role": "user", "content": "x"}], "rejected": "b"})[1] == "missing_prompt"


def test_bad_lines_are_counted_not_dropped(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\nnot json\n{"prompt": "q"}\n')
    data = prefs.load_pairs(f)
    assert len(data.pairs) == 1 and data.reasons == {"bad_json": 1, "missing_chosen_or_rejected": 1}


def test_kv_cache_sampling_logprobs_match_a_full_forward(tiny_lm):
    from pipeline.train.rollout import response_logprobs, sample

    model, tok = tiny_lm
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    ro = sample(model, prompts, max_new_tokens=12, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id,
                temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert ro.input_ids.shape[1] == ro.prompt_len + ro.logprobs.shape[1]
    with torch.no_grad():
        full = response_logprobs(model, ro.input_ids, ro.attention_mask, ro.prompt_len, temperature=0.7)
    m = ro.response_mask.bool()
    assert torch.allclose(full[m], ro.logprobs[m], atol=1e-4)
    assert (ro.logprobs[~m] == 0).all()


def test_greedy_sampling_is_deterministic_and_stops(tiny_lm):
    from pipeline.train.rollout import sample

    model, tok = tiny_lm
    a = sample(model, [[5, 6, 7]], max_new_tokens=8, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, temperature=0)
    b = sample(model, [[5, 6, 7]], max_new_tokens=8, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, temperature=0)
    assert a.responses == b.responses
    first = a.responses[0][0]  # make the first greedy token a stop token: the reply is just that token
    c = sample(model, [[5, 6, 7]], max_new_tokens=8, eos_ids=[first], pad_id=tok.pad_token_id, temperature=0)
    assert c.responses == [[first]]


def test_critic_choice_and_constitution(tmp_path):
    from pipeline.train.critic import choose, load_constitution

    pair, _ = choose([{"role": "user", "content": "q"}], "a", "b", -0.8, margin=0.05)
    assert pair.chosen == "b" and pair.rejected == "a"
    assert choose([], "a", "b", 0.02, margin=0.05) == (None, "critic_tie")
    assert choose([], "same", "same ", 1.0, margin=0.05) == (None, "identical_replies")
    assert {p["scorer"] for p in load_constitution()["principles"]} >= {"judge", "reward_model"}
    bad = tmp_path / "c.yaml"
    bad.write_text("principles:\n  - text: x\n    scorer: vibes\n")
    with pytest.raises(ValueError, match="scorer"):
        load_constitution(str(bad))
    bad.write_text("principles:\n  - text: ' '\n    scorer: judge\n")
    with pytest.raises(ValueError, match="judged by its text"):
        load_constitution(str(bad))


def test_constitutional_judge_reads_the_principle_and_ignores_reply_order(tiny_lm, tmp_path):
    from pipeline.train.critic import ConstitutionalJudge, judge_messages

    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    judge = ConstitutionalJudge(str(tmp_path / "judge"))
    prompts = [[{"role": "user", "content": "How do I bake bread?"}]] * 2
    a, b = ["Mix flour, water and yeast, then bake.", "No."], ["No.", "Knead the dough and bake it hot."]
    principle = "Choose the reply that answers the question helpfully."
    assert principle in judge_messages(principle, prompts[0], a[0], b[0])[0]["content"]
    ab = judge.prefer(principle, prompts, a, b)
    assert ab == [-x for x in judge.prefer(principle, prompts, b, a)]  # position of a reply does not count
    assert all(-1 <= x <= 1 for x in ab) and ab[0] != 0
    assert judge.prefer("Choose the shorter reply, whatever it says.", prompts, a, b) != ab  # the text is read


def test_configs_name_the_bad_field():
    from cluster.config import ConfigError, build_config
    from pipeline.train.dpo import DPOConfig
    from pipeline.train.grpo import GRPOConfig
    from pipeline.train.ppo import PPOConfig
    from pipeline.train.reward import RewardConfig

    for cls, key, bad in [(GRPOConfig, "group_size", "1"), (PPOConfig, "kl_target", "-1"),
                          (DPOConfig, "beta", "0"), (RewardConfig, "action", "dance"), (PPOConfig, "clip_eps", "2")]:
        with pytest.raises(ConfigError, match=key):
            build_config(cls, "tiny", [f"{key}={bad}"])


def test_gsm8k_problems_and_verifiable_reward():
    from pipeline.train.grpo import load_gsm8k, verifiable_reward

    problems, skipped = load_gsm8k(str(shared("math/test.jsonl")))
    assert len(problems) + sum(skipped.values()) == 1319 and len(problems) > 1300
    assert problems[0]["answer"] == 18 and "Janet" in problems[0]["question"]
    assert verifiable_reward("so... The answer is 18.", 18, 0.1) == (1.1, True)
    assert verifiable_reward("#### 18", 18, 0.1) == (1.1, True)
    assert verifiable_reward("I think 18", 18, 0.1) == (1.0, True)  # right but off-format
    assert verifiable_reward("The answer is 17.", 18, 0.1) == (0.1, False)


class _MetaScalars(torch.overrides.TorchFunctionMode):
    """Reading a number off a meta tensor gives 0 (it has no data); every other op runs as is, so an op
    mixing the learner's device with the CPU raises ("Tensor on device cpu is not on the expected device")."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        meta = bool(args) and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta"
        if meta and func is torch.Tensor.__bool__:
            return True
        if meta and func in (torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.tolist):
            return 0.0
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("with_value", [False, True], ids=["grpo", "ppo"])
def test_rl_update_keeps_every_op_on_the_learner_device(with_value):
    """The learner on `meta` stands in for a GPU (none here): rollouts arrive on the CPU, and the
    update must move them, never mix devices or copy log-probs back (`.cpu()` of meta raises)."""
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.train.rl import PolicyValue, rl_update
    from pipeline.train.rollout import Rollout

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))
    policy = PolicyValue(lm, with_value=with_value).to("meta")
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    B, P, T = 4, 5, 6
    ids = torch.randint(0, 64, (B, P + T))
    ro = Rollout(input_ids=ids, attention_mask=torch.ones_like(ids), prompt_len=P,
                 response_mask=torch.ones(B, T, dtype=torch.long), logprobs=torch.randn(B, T))
    cfg = SimpleNamespace(epochs_per_step=2, minibatch_size=2, seed=0, temperature=1.0, clip_eps=0.2,
                          kl_coef=0.1, kl_estimator="k3", grad_clip=1.0)
    ctx = SimpleNamespace(cfg=cfg, step=0, model=policy, device=torch.device("meta"), opt=opt,
                          sched=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    values = {"returns": torch.randn(B, T), "old_values": torch.randn(B, T)} if with_value else {}
    with _MetaScalars():
        stats = rl_update(ctx, ro, torch.randn(B, T), ref_logp=torch.randn(B, T), **values)
    assert ("value_loss" in stats) == with_value and "kl_loss" in stats
    assert all(p.device.type == "meta" for p in policy.parameters())
