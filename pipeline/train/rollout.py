"""Rollouts: sampling with per-token log-probs (on `pipeline.engine`), and the frozen models as Ray actors.

    from pipeline.train.rollout import sample, response_logprobs
    ro = sample(model, [[5, 6, 7], [8, 9]], max_new_tokens=16, eos_ids=[2], pad_id=0)
    ro.logprobs          # [B, T] log π(token) of each sampled token (0 after the stop)

One layout serves sampling, PPO/GRPO recomputation, the reference model and DPO:
prompts left-padded to a common length P, responses right-padded after them, so
response token t of every row sits at column P + t. The reference (also a sampler) and reward
models are Ray actors built by `spawn(...)` with resources from config, as
in OpenRLHF, so each may sit on its own GPU or node (and moves its model onto the GPU
its actor reserved). `import ray` happens only there.
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


def left_pad(seqs: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = [[pad_id] * (width - len(s)) + list(s) for s in seqs]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in seqs]
    return (torch.tensor(ids, dtype=torch.long, device=device).reshape(len(seqs), width),
            torch.tensor(mask, dtype=torch.long, device=device).reshape(len(seqs), width))


def join(prompts: list[list[int]], responses: list[list[int]], pad_id: int,
         device=None) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Prompts and given responses in the rollout layout: (input_ids, attention_mask, P, response_mask)."""
    p_ids, p_mask = left_pad(prompts, pad_id, device)
    T = max(1, max(len(r) for r in responses))
    r_ids = torch.tensor([list(r) + [pad_id] * (T - len(r)) for r in responses], dtype=torch.long, device=device)
    r_mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in responses], dtype=torch.long, device=device)
    return torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask], 1), p_ids.shape[1], r_mask


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


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
    """Sample one response per prompt with the engine's KV-cache sampler; temperature 0 is greedy.

    Log-probs are taken from the temperature-scaled distribution, which is what PPO and
    GRPO recompute during the update (TRL does the same); top-k/top-p only filter sampling.
    A CPU `generator` seeds a generator on the model's device, so the same call runs on a GPU.
    """
    from pipeline.engine import Engine, Sampling

    was_training = model.training
    model.eval()
    engine = Engine(model, eos_ids=eos_ids, pad_id=pad_id)
    s = Sampling(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    rows = engine.generate(prompts, [s] * len(prompts), logprobs=True, generator=generator)
    model.train(was_training)
    for r in rows:
        if r.error is not None:
            raise r.error
    responses = [r.ids + ([r.stop_token] if r.stop_token is not None else []) for r in rows]
    ids, mask, P, resp_mask = join(prompts, responses, pad_id, engine.device)
    T = resp_mask.shape[1]
    logps = torch.tensor([r.logprobs + [0.0] * (T - len(r.logprobs)) for r in rows], device=engine.device)
    return Rollout(ids, mask, P, resp_mask, logps)


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

        from pipeline.engine import default_device, default_dtype

        torch.set_num_threads(max(1, threads))
        self.path, self.device = path, default_device()  # the GPU this actor reserved, if any
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=default_dtype(self.device)).to(self.device).eval()

    @torch.no_grad()
    def logprobs(self, input_ids, attention_mask, prompt_len: int, temperature: float = 1.0, batch_size: int = 16):
        """Log-probs [B, T] in fp32 on the CPU, whatever device the actor computes on (they cross Ray)."""
        ids, mask = input_ids.to(self.device), attention_mask.to(self.device)
        parts = [response_logprobs(self.model, ids[i : i + batch_size], mask[i : i + batch_size],
                                   prompt_len, temperature) for i in range(0, len(ids), batch_size)]
        return torch.cat(parts, 0).float().cpu()

    def generate(self, prompts: list[list[dict]], max_new_tokens: int, temperature: float,
                 seed: int = 0, batch_size: int = 32) -> list[str]:
        from pipeline.tokenizer import load_tokenizer

        return generate_replies(self.model, load_tokenizer(self.path), prompts, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed, batch_size=batch_size)


def spawn(cls, *args, num_cpus: float, num_gpus: float = 0.0, **kwargs):
    """Start `cls` as a Ray actor with its own resources; its torch threads follow num_cpus."""
    import ray

    actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(cls)
    return actor.remote(*args, threads=max(1, int(num_cpus)), **kwargs)
