"""The reward model as a library: load, initialise from a backbone, score replies, Bradley–Terry loss.

    from pipeline.train.rewardmodel import load_reward_model, score_pairs
    model, tok = load_reward_model("runs/demo/reward")
    score_pairs(model, tok, [[{"role": "user", "content": "Hi"}]], ["Hello!"])

A reward model is `AutoModelForSequenceClassification` (num_labels=1) on a chat LM's
backbone; the head reads the last real token of a left-padded ChatML sequence. The
`d2d reward` stage (pipeline.train.reward) trains one; PPO's reward actor and the RLAIF
critic score with one.
"""

from __future__ import annotations

import torch

from pipeline.train.losses import bradley_terry_loss
from pipeline.train.rollout import left_pad


def load_reward_model(path: str, device: str | None = None):
    """(model, tokenizer) of a saved reward model (path or URI), in eval mode, on `device`
    (default: the GPU Ray gave this process, else CPU)."""
    from transformers import AutoModelForSequenceClassification

    from pipeline.runfs import local_path
    from pipeline.tokenizer import load_tokenizer

    path = local_path(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    return model.to(device).eval(), load_tokenizer(path)


def init_reward_model(backbone: str, pad_id: int):
    """A reward model whose transformer is the backbone's (path or URI), with a freshly initialised scalar head."""
    from transformers import AutoModelForSequenceClassification

    from pipeline.runfs import local_path

    model = AutoModelForSequenceClassification.from_pretrained(local_path(backbone), num_labels=1,
                                                               dtype=torch.float32)
    model.config.pad_token_id = pad_id
    return model


def reward_model(init: str, tok):
    """`run_learners`'s model_fn for `d2d reward`: INIT's backbone with a fresh scalar head."""
    return init_reward_model(init, tok.pad_token_id)


def encode_reply(tok, prompt: list[dict], reply: str, max_len: int) -> list[int]:
    """ChatML ids of prompt + reply, keeping the last `max_len` tokens (the reply is at the end)."""
    from pipeline.tokenizer import render_chat

    ids = render_chat(tok, prompt + [{"role": "assistant", "content": reply}])
    return ids[-max_len:]


def rewards(model, ids: list[list[int]], pad_id: int) -> torch.Tensor:
    """Scalar reward per sequence: left-padded, so the head reads every row's last real token."""
    x, mask = left_pad(ids, pad_id)
    device = next(model.parameters()).device
    x, mask = x.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=x, attention_mask=mask, position_ids=pos).logits[:, 0].float()


@torch.no_grad()
def score_pairs(model, tok, prompts: list[list[dict]], replies: list[str], max_len: int = 512,
                batch_size: int = 16) -> list[float]:
    ids = [encode_reply(tok, p, r, max_len) for p, r in zip(prompts, replies, strict=True)]
    out: list[float] = []
    for i in range(0, len(ids), batch_size):
        out.extend(rewards(model, ids[i : i + batch_size], tok.pad_token_id).tolist())
    return out


def pair_batch_loss(model, batch: dict, pad_id: int) -> tuple[torch.Tensor, dict]:
    """Bradley–Terry on one batch of encoded pairs: chosen and rejected in one forward pass."""
    n = len(batch["chosen"])
    r = rewards(model, batch["chosen"] + batch["rejected"], pad_id)
    loss, acc = bradley_terry_loss(r[:n], r[n:])
    return loss, {"accuracy": acc.item(), "margin": (r[:n] - r[n:]).mean().item()}


@torch.no_grad()
def pairwise_accuracy(model, pairs: list[dict], pad_id: int, batch_size: int = 16) -> dict:
    """Held-out accuracy (chosen scored above rejected), mean margin and BT loss."""
    model.eval()
    wins = total = 0
    margins, losses = [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        batch = {"chosen": [p["chosen"] for p in chunk], "rejected": [p["rejected"] for p in chunk]}
        loss, stats = pair_batch_loss(model, batch, pad_id)
        wins += stats["accuracy"] * len(chunk)
        total += len(chunk)
        margins.append(stats["margin"] * len(chunk))
        losses.append(loss.item() * len(chunk))
    return {"accuracy": wins / max(total, 1), "margin": sum(margins) / max(total, 1),
            "loss": sum(losses) / max(total, 1), "pairs": total}


class RewardScorer:
    """The frozen reward model: one scalar per (prompt messages, reply) pair."""

    def __init__(self, path: str, threads: int = 1, max_len: int = 512):
        from pipeline.engine import default_device, default_dtype

        torch.set_num_threads(max(1, threads))
        self.model, self.tok = load_reward_model(path)
        device = default_device()  # the GPU this actor reserved, if any
        self.model = self.model.to(device=device, dtype=default_dtype(device))
        self.max_len = max_len

    @torch.no_grad()
    def score(self, prompts: list[list[dict]], replies: list[str], batch_size: int = 16) -> list[float]:
        return score_pairs(self.model, self.tok, prompts, replies, self.max_len, batch_size)
