"""pipeline.train.losses against values worked out by hand (no Ray, no model)."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.train import losses as L


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_bradley_terry_matches_log_sigmoid_by_hand():
    loss, acc = L.bradley_terry_loss(t(2.0, 0.0), t(1.0, 1.0))
    # margins 1 and -1: -log σ(1) = 0.31326, -log σ(-1) = 1.31326
    assert loss.item() == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-5)
    assert acc.item() == 0.5


def test_dpo_loss_and_implicit_rewards():
    loss, rc, rr = L.dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    # chosen reward 0.5*(−1+2)=0.5, rejected 0.5*(−3+2)=−0.5, logits 1 → −log σ(1)
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(0.313262, abs=1e-5)
    smooth, _, _ = L.dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, label_smoothing=0.1)
    assert smooth.item() == pytest.approx(0.9 * 0.313262 + 0.1 * 1.313262, abs=1e-5)


def test_dpo_at_reference_is_log2():
    x = torch.randn(4)
    loss, _, _ = L.dpo_loss(x, x - 1, x, x - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_kl_estimators_by_hand():
    logp, ref = t(math.log(0.5)), t(math.log(0.25))  # log r = log(0.25/0.5) = −log 2
    lr = -math.log(2)
    assert L.kl_estimate(logp, ref, "k1").item() == pytest.approx(-lr)
    assert L.kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * lr * lr)
    assert L.kl_estimate(logp, ref, "k3").item() == pytest.approx((0.5 - 1) - lr)
    with pytest.raises(ValueError, match="kl_estimator"):
        L.kl_estimate(logp, ref, "k4")


def test_kl_estimators_average_to_true_kl():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.4, 0.4, 0.2])
    true_kl = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    for kind in ("k1", "k3"):
        est = L.kl_estimate(p.log()[x], q.log()[x], kind).mean().item()
        assert est == pytest.approx(true_kl, abs=0.01)


def test_adaptive_kl_controller_moves_towards_target():
    c = L.kl_controller(0.1, target=6.0, horizon=10_000)
    assert c.update(12.0, 1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped to +0.2
    c = L.kl_controller(0.1, target=6.0, horizon=10_000)
    assert c.update(5.4, 1000) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
    assert L.kl_controller(0.1, None, 10).update(100.0, 10) == 0.1


def test_per_token_rewards_put_score_on_last_response_token():
    mask = t([0, 1, 1, 0])
    logp, ref = t([0.0, -1.0, -2.0, 0.0]), t([0.0, -1.5, -1.0, 0.0])
    r, kl = L.per_token_rewards(torch.tensor([3.0]), logp, ref, mask, beta=0.1)
    assert kl.tolist()[0] == pytest.approx([0, 0.5, -1.0, 0])
    assert r.tolist()[0] == pytest.approx([0, -0.05, 3.0 + 0.1, 0])


def test_gae_by_hand():
    rewards, values, mask = t([0.0, 1.0, 2.0]), t([0.5, 1.0, 1.5]), t([1, 1, 1])
    adv, ret = L.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 2.0 - 1.5
    d1 = 1.0 + 0.9 * 1.5 - 1.0
    d0 = 0.0 + 0.9 * 1.0 - 0.5
    a2, a1 = d2, d1 + 0.45 * d2
    a0 = d0 + 0.45 * a1
    assert adv.tolist()[0] == pytest.approx([a0, a1, a2])
    assert ret.tolist()[0] == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 1.5])


def test_gae_ignores_padding_after_the_response():
    adv, _ = L.gae(t([1.0, 5.0]), t([0.0, 7.0]), t([1, 0]), gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([1.0, 0.0])


def test_ppo_clip_by_hand():
    old = t([0.0, 0.0, 0.0])
    logp = t([math.log(1.5), math.log(0.5), math.log(1.1)])
    adv = t([1.0, -1.0, 2.0])
    mask = t([1, 1, 1])
    loss, stats = L.ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # token 0: min(1.5, 1.2)·1 → 1.2 ; token 1: min(−0.5, −0.8) → −0.8 ; token 2: 2.2
    assert loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2) / 3, abs=1e-6)
    assert stats["clip_frac"].item() == pytest.approx(2 / 3)


def test_value_loss_clipped_by_hand():
    v, old, ret, mask = t([2.0]), t([0.0]), t([1.5]), t([1.0])
    # unclipped (2−1.5)² = 0.25 ; clipped V=0.2: (0.2−1.5)² = 1.69 → max 1.69
    assert L.value_loss(v, old, ret, mask, clip=0.2).item() == pytest.approx(0.5 * 1.69)
    assert L.value_loss(v, old, ret, mask, clip=None).item() == pytest.approx(0.125)


def test_group_advantages_by_hand():
    adv = L.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), group_size=3, eps=0.0)
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # sample std of (1, 0, 0)
    assert adv[:3].tolist() == pytest.approx([(2 / 3) / std, -(1 / 3) / std, -(1 / 3) / std])
    assert adv[3:].tolist() == [0.0, 0.0, 0.0]  # all-equal group: no signal
    assert L.group_advantages(torch.tensor([3.0, 1.0]), 2, scale=False).tolist() == [1.0, -1.0]
    with pytest.raises(ValueError, match="group_size"):
        L.group_advantages(torch.ones(5), 2)


def test_token_logprobs_and_entropy():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert L.token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.25))
    assert L.entropy_from_logits(logits).item() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))


def test_masked_whiten_has_unit_variance_on_mask():
    x, mask = t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])
    w = L.masked_whiten(x, mask)
    assert L.masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert L.masked_mean(w**2, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert w[0, 3].item() == 0.0
