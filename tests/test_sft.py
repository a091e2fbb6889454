"""SFT: data preparation, the batch source, config validation, and a tiny run that changes behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cluster.config import ConfigError, build_config
from pipeline.chat.encode import IGNORE
from pipeline.train.sft import SFTBatches, SFTConfig, build_conversations, prepare, split_val


@pytest.fixture(scope="module")
def tok():
    from pipeline.tokenizer import tiny_tokenizer

    return tiny_tokenizer()


def test_mixture_plus_file_with_bad_rows_counts_and_splits(tok, tmp_path):
    f = tmp_path / "extra.jsonl"
    f.write_text("\n".join([
        json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}),
        json.dumps({"conversations": [{"from": "alien", "value": "x"}]}),
        "not json",
    ]) + "\n")
    cfg = SFTConfig(input=[str(f)], format="sharegpt", identity_n=30, arith_n=50, max_len=64,
                    system_prompt="Be brief.", system_prompt_rate=1.0)
    convs, sources, rejects = build_conversations(cfg)
    assert len(convs) == 81 and sources[str(f)]["kept"] == 1
    assert {r["reason"] for r in rejects} == {"unknown_role", "invalid_json"}
    assert all(c["messages"][0] == {"role": "system", "content": "Be brief."} for c in convs)
    data = prepare(cfg, tok)
    rep = data["report"]
    assert rep["conversations"]["train"] + rep["conversations"]["val"] == 81 and rep["conversations"]["val"] >= 1
    assert rep["rejected"] == {"unknown_role": 1, "invalid_json": 1}
    rows = data["train_rows"]
    assert rows["input_ids"].shape[1] == 64 and (rows["labels"] != IGNORE).any()
    # The split is a function of content and seed only.
    a, b = split_val(convs, 0.2, 0), split_val(list(reversed(convs)), 0.2, 0)
    assert sorted(map(json.dumps, a[1])) == sorted(map(json.dumps, b[1]))


def test_batch_source_is_deterministic_disjoint_across_ranks_and_covers_epoch():
    n = 23
    rows = {"input_ids": np.arange(n)[:, None].repeat(4, 1), "labels": np.zeros((n, 4), dtype=np.int64)}
    src = SFTBatches(rows, batch_size=3, seed=7)
    spe = src.steps_per_epoch(world_size=2)
    seen = []
    for step in range(spe):
        r0, r1 = src.indices(step, 0, 2), src.indices(step, 1, 2)
        assert not set(r0) & set(r1) or step == spe - 1  # only the wrapped last step may repeat
        seen += list(r0) + list(r1)
    assert set(seen) == set(range(n))
    assert np.array_equal(src.batch(5, 1, 2)["input_ids"], SFTBatches(rows, 3, 7).batch(5, 1, 2)["input_ids"])
    one = src.steps_per_epoch(world_size=1)
    epoch0 = np.concatenate([src.indices(s, 0, 1) for s in range(one)])
    epoch1 = np.concatenate([src.indices(one + s, 0, 1) for s in range(one)])
    assert not np.array_equal(epoch0, epoch1)  # each epoch reshuffles
    import pickle

    assert pickle.loads(pickle.dumps(src)).indices(3, 0, 2).tolist() == src.indices(3, 0, 2).tolist()


def test_bad_config_fails_naming_the_field():
    with pytest.raises(ConfigError, match="format"):
        build_config(SFTConfig, None, {"format": "csv"})
    with pytest.raises(ConfigError, match="input"):
        build_config(SFTConfig, None, {"mixture": "false"})
    with pytest.raises(ConfigError, match="val_fraction"):
        build_config(SFTConfig, "tiny", {"val_fraction": "0.9"})
    assert build_config(SFTConfig, "tiny", ["input=a.jsonl,b.jsonl"]).input == ["a.jsonl", "b.jsonl"]


def test_tiny_sft_run_teaches_the_model_to_stop(ray_local, run_dir):
    """End to end on Ray Train: the tuned model ends its replies with <|im_end|> far more often."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.chat.identity import make_identity
    from pipeline.tokenizer import load_tokenizer
    from pipeline.train.evaluate import stop_rate
    from pipeline.train.sft import run
    from serving.tiny_model import build_tiny_model

    build_tiny_model(str(run_dir / "base"), hidden=64, layers=2)
    cfg = build_config(SFTConfig, "tiny", {"run_dir": str(run_dir), "identity_n": 60, "arith_n": 100,
                                           "max_len": 128, "epochs": 3, "lr": 3e-3, "eval_every": 1000})
    result = run(cfg)
    out = run_dir / "sft"
    assert result["artifacts"] == str(out) and result["steps"] >= 10
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "sft.json", "val.jsonl"):
        assert (out / name).exists(), name
    assert "<|im_start|>" in json.loads((out / "tokenizer_config.json").read_text()).get("chat_template", "") or (
        out / "chat_template.jinja").exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"] and "val_loss" in rows[-1]
    assert json.loads((out / "sft.json").read_text())["arithmetic"] == {"ops": "+-", "lo": 0, "hi": 19}

    tok = load_tokenizer(str(out))
    prompts = [c["messages"][:-1] for c in make_identity(16, 99, "Dia", "the data2dialogue team")
               if len(c["messages"]) == 2][:12]
    rates = {}
    for name in ("base", "sft"):
        model = AutoModelForCausalLM.from_pretrained(str(run_dir / name), dtype=torch.float32)
        rates[name] = stop_rate(model, tok, prompts, max_new_tokens=32, temperature=1.0, seed=0, batch_size=16)[0]
    assert rates["sft"] >= rates["base"] + 0.5, rates

    # Plain Hugging Face `generate` on the saved folder stops at <|im_end|> (generation_config).
    from pipeline.tokenizer import IM_END, render_chat

    im_end = tok.convert_tokens_to_ids(IM_END)
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert im_end in model.generation_config.eos_token_id
    ended = 0
    for p in prompts:
        ids = torch.tensor([render_chat(tok, p, add_generation_prompt=True)])
        new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48, do_sample=False)[0, ids.shape[1]:]
        new = new.tolist()
        if im_end in new:
            ended += 1
            assert new.index(im_end) == len(new) - 1, "generation ran past <|im_end|>"
    assert ended >= len(prompts) // 2, (ended, len(prompts))

    # `d2d eval` on the result: eval.json with the three figures as fractions / a finite loss.
    from pipeline.train.evaluate import EvalConfig
    from pipeline.train.evaluate import run as run_eval

    figures = run_eval(EvalConfig(model=str(out), stop_prompts=8, arith_n=8, max_new_tokens=24))
    ev = json.loads((out / "eval.json").read_text())
    assert figures["artifacts"] == str(out / "eval.json")
    assert 0 <= ev["stop_rate"] <= 1 and 0 <= ev["arithmetic_accuracy"] <= 1 and ev["val_loss"] > 0
    assert ev["arithmetic"] == {"ops": "+-", "lo": 0, "hi": 19, "seed": 0} and ev["val_source"].endswith("val.jsonl")


def test_packed_conversations_do_not_attend_to_each_other(tok, tmp_path):
    """Logits of a conversation packed behind another equal its logits alone (block-diagonal attention)."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.chat.encode import build_rows, encode_conversations, forward_rows
    from serving.tiny_model import build_tiny_model

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(str(tmp_path / "m")), dtype=torch.float32)
    convs = [{"messages": [{"role": "user", "content": "first question, a long one " * 3},
                           {"role": "assistant", "content": "first answer"}]},
             {"messages": [{"role": "user", "content": "second"}, {"role": "assistant", "content": "reply"}]}]
    enc, _ = encode_conversations(tok, convs, 256)
    packed = build_rows(enc, 256, packing=True, pad_id=tok.pad_token_id)
    assert len(packed["input_ids"]) == 1
    n0, n1 = len(enc[0].ids), len(enc[1].ids)
    with torch.no_grad():
        both = forward_rows(model, torch.from_numpy(packed["input_ids"]),
                            torch.from_numpy(packed["position_ids"])).logits[0]
        alone = [model(input_ids=torch.tensor([e.ids])).logits[0] for e in enc]
    assert packed["input_ids"][0, :n0].tolist() == enc[0].ids  # longest first
    assert torch.allclose(both[:n0], alone[0], atol=1e-4)
    assert torch.allclose(both[n0 : n0 + n1], alone[1], atol=1e-4)


def test_lora_adapters_train_alone_and_are_merged_on_save(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.train.sft import load_model, save_model
    from serving.tiny_model import build_tiny_model

    base = build_tiny_model(str(tmp_path / "base"))
    model = load_model(base, lora=True, r=4, alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p)  # what training would do: the adapter now changes outputs
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = model(input_ids=x).logits
    save_model(str(tmp_path / "out"), base, model)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=x).logits, want, atol=1e-4)
    assert (tmp_path / "out" / "tokenizer.json").exists()
