"""Rollouts: KV-cache sampling with per-token log-probs, and the frozen models as Ray actors.

    from pipeline.train.rollout import sample, response_logprobs
    ro = sample(model, [[5, 6, 7], [8, 9]], max_new_tokens=16, eos_ids=[2], pad_id=0)
    ro.logprobs          # [B, T] log π(token) of each sampled token (0 after the stop)

One layout serves sampling, PPO/GRPO recomputation, the reference model and DPO:
prompts left-padded to a common length P, responses right-padded after them, so
response token t of every row sits at column P + t. The reference (also a sampler) and reward
models are Ray actors built by `spawn(...)` with resources from config, as
in OpenRLHF, so each may sit on its own GPU or node. `import ray` happens only there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.train.losses import entropy_from_logits, token_logprobs


@dataclass
class Rollout:
    input_ids: torch.Tensor
    """[B, P + T]: left-padded prompt, then the response, right-padded."""
    attention_mask: torch.Tensor
    prompt_len: int
    response_mask: torch.Tensor
    """[B, T]: 1 on sampled tokens up to and including the stop token."""
    logprobs: torch.Tensor
    """[B, T]: log-prob of each sampled token under the sampling distribution."""

    @property
    def responses(self) -> list[list[int]]:
        r = self.input_ids[:, self.prompt_len :]
        return [row[m.bool()].tolist() for row, m in zip(r, self.response_mask, strict=True)]


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def join(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Prompts and given responses in the rollout layout: (input_ids, attention_mask, P, response_mask)."""
    p_ids, p_mask = left_pad(prompts, pad_id)
    T = max(1, max(len(r) for r in responses))
    r_ids = torch.full((len(responses), T), pad_id, dtype=torch.long)
    r_mask = torch.zeros((len(responses), T), dtype=torch.long)
    for i, r in enumerate(responses):
        r_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        r_mask[i, : len(r)] = 1
    return torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask], 1), p_ids.shape[1], r_mask


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample one response per prompt with a KV cache; temperature 0 is greedy.

    Log-probs are taken from the temperature-scaled distribution, which is what PPO and
    GRPO recompute during the update (TRL does the same); top-k/top-p only filter sampling.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))
    B, P = ids.shape
    pos = _positions(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1]
    eos = torch.tensor(eos_ids, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logps, alive = [], [], []
    next_pos = pos[:, -1:] + 1
    for _ in range(max_new_tokens):
        scaled = logits.float() / max(temperature, 1e-6)
        if temperature <= 0:
            tok = scaled.argmax(-1)
        else:
            probs = _filter_logits(scaled, top_k, top_p).softmax(-1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        lp = scaled.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
        alive.append(~done)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
        logps.append(torch.where(done, torch.zeros_like(lp), lp))
        done = done | torch.isin(tok, eos)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_pos = next_pos + 1
    model.train(was_training)
    resp = torch.stack(tokens, 1)
    resp_mask = torch.stack(alive, 1).long()
    full_mask = torch.cat([left_pad(prompts, pad_id)[1].to(device), resp_mask], 1)
    return Rollout(torch.cat([ids[:, :P], resp], 1), full_mask, P, resp_mask, torch.stack(logps, 1))


def response_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
    temperature: float = 1.0, with_entropy: bool = False,
):
    """Per-token log-probs [B, T] of the response columns (and their entropies if asked)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask),
                logits_to_keep=input_ids.shape[1] - prompt_len + 1)
    logits = out.logits[:, :-1].float() / temperature
    lp = token_logprobs(logits, input_ids[:, prompt_len:])
    return (lp, entropy_from_logits(logits)) if with_entropy else lp


def encode_prompts(tok, prompts: list[list[dict]]) -> list[list[int]]:
    """Chat prompts → ChatML ids ending in the assistant header (the model's turn)."""
    from pipeline.tokenizer import render_chat

    return [render_chat(tok, m, add_generation_prompt=True) for m in prompts]


def decode_responses(tok, responses: list[list[int]]) -> list[str]:
    """Response ids → reply text, without the stop token."""
    from pipeline.tokenizer import stop_token_ids

    stops = set(stop_token_ids(tok))
    return [tok.decode([t for t in r if t not in stops], skip_special_tokens=False) for r in responses]


@torch.no_grad()
def generate_replies(model, tok, prompts: list[list[dict]], *, max_new_tokens: int, temperature: float,
                     seed: int = 0, batch_size: int = 32) -> list[str]:
    """Chat replies for a list of conversations (greedy at temperature 0)."""
    from pipeline.tokenizer import stop_token_ids

    gen = torch.Generator().manual_seed(seed)
    ids = encode_prompts(tok, prompts)
    out: list[str] = []
    for i in range(0, len(ids), batch_size):
        ro = sample(model, ids[i : i + batch_size], max_new_tokens=max_new_tokens, eos_ids=stop_token_ids(tok),
                    pad_id=tok.pad_token_id, temperature=temperature, generator=gen)
        out.extend(decode_responses(tok, ro.responses))
    return out


# ---------------------------------------------------------------- frozen models as Ray actors


class ReferenceModel:
    """The frozen reference policy: log-probs of given responses (KL penalty, DPO), and sampled
    chat replies (RLAIF candidates, evaluation), so one actor serves both."""

    def __init__(self, path: str, threads: int = 1):
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(max(1, threads))
        self.path = path
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    @torch.no_grad()
    def logprobs(self, input_ids, attention_mask, prompt_len: int, temperature: float = 1.0, batch_size: int = 16):
        parts = [response_logprobs(self.model, input_ids[i : i + batch_size], attention_mask[i : i + batch_size],
                                   prompt_len, temperature) for i in range(0, len(input_ids), batch_size)]
        return torch.cat(parts, 0)

    def generate(self, prompts: list[list[dict]], max_new_tokens: int, temperature: float,
                 seed: int = 0, batch_size: int = 32) -> list[str]:
        from pipeline.tokenizer import load_tokenizer

        return generate_replies(self.model, load_tokenizer(self.path), prompts, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed, batch_size=batch_size)


class RewardScorer:
    """The frozen reward model: one scalar per (prompt messages, reply) pair."""

    def __init__(self, path: str, threads: int = 1, max_len: int = 512):
        from pipeline.train.reward import load_reward_model

        torch.set_num_threads(max(1, threads))
        self.model, self.tok = load_reward_model(path)
        self.max_len = max_len

    @torch.no_grad()
    def score(self, prompts: list[list[dict]], replies: list[str], batch_size: int = 16) -> list[float]:
        from pipeline.train.reward import score_pairs

        return score_pairs(self.model, self.tok, prompts, replies, self.max_len, batch_size)


def spawn(cls, *args, num_cpus: float, num_gpus: float = 0.0, **kwargs):
    """Start `cls` as a Ray actor with its own resources; its torch threads follow num_cpus."""
    import ray

    actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(cls)
    return actor.remote(*args, threads=max(1, int(num_cpus)), **kwargs)
