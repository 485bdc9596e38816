"""Post-training losses (training/losses.py, the Objective of training/preference_steps.py)
against plain PyTorch implementations of the DPO, KTO and reward-model formulas: losses and
gradients to 1e-6 on the same batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from megatron_lite.config.schema import PostTrainingConfig
from megatron_lite.parallel.state import ParallelState
from megatron_lite.training.losses import dpo_loss, kto_loss, last_label_values, sequence_log_probs
from megatron_lite.training.preference_steps import Objective

VOCAB, SEQ = 11, 7


def batch(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [rows, s, v] leaf, labels [rows, s], loss_mask [rows, s]: a prompt of 2-3 tokens)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, SEQ, VOCAB, generator=g, requires_grad=True)
    labels = torch.randint(0, VOCAB, (rows, SEQ), generator=g)
    mask = torch.ones(rows, SEQ)
    for r in range(rows):
        mask[r, : 2 + r % 2] = 0  # the prompt: no loss
    return logits, labels, mask


def plain_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over label tokens of log_softmax gathered at the label, over the whole vocabulary."""
    per_token = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1)


def objective(**keys) -> Objective:
    return Objective(PostTrainingConfig(**keys), ParallelState.single())


def grad_of(loss: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, leaf)
    return grad


def test_dpo_matches_the_formula_with_gradients():
    beta = 0.3
    logits, labels, mask = batch(6)  # 3 pairs: rows 0-2 chosen, 3-5 rejected
    ref_logits = torch.randn(6, SEQ, VOCAB, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = objective(train_impl="dpo").sequence_logps(ref_logits, labels, mask)
    loss, metrics = objective(train_impl="dpo", dpo_beta=beta)(logits, labels, mask, reference, None)

    pi, ref = plain_logps(logits, labels, mask), plain_logps(ref_logits, labels, mask)
    pi_c, pi_r, ref_c, ref_r = pi[:3], pi[3:], ref[:3], ref[3:]
    expected = -F.logsigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r))).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(grad_of(loss, logits), grad_of(expected, logits), atol=1e-6, rtol=0)
    chosen, rejected = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
    assert metrics["reward_margin"].item() == pytest.approx((chosen - rejected).mean().item(), abs=1e-6)
    assert metrics["reward_accuracy"].item() == pytest.approx((chosen > rejected).float().mean().item())
    assert metrics["chosen_rewards"].item() == pytest.approx(chosen.mean().item(), abs=1e-6)


def test_dpo_loss_is_log2_when_the_reference_is_the_policy():
    logits, labels, mask = batch(8, seed=3)
    obj = objective(train_impl="dpo", dpo_beta=0.1)
    with torch.no_grad():
        reference = obj.sequence_logps(logits, labels, mask)
    loss, metrics = obj(logits, labels, mask, reference, None)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["reward_margin"].item() == 0.0 and metrics["reward_accuracy"].item() == 0.0


def test_reference_free_dpo_compares_the_policy_alone():
    beta = 0.5
    logits, labels, mask = batch(4, seed=4)
    loss, _ = objective(train_impl="dpo", dpo_beta=beta, dpo_reference_free=True)(logits, labels, mask, None, None)
    pi = plain_logps(logits, labels, mask)
    expected = -F.logsigmoid(beta * (pi[:2] - pi[2:])).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(grad_of(loss, logits), grad_of(expected, logits), atol=1e-6, rtol=0)


def plain_kto(pol: torch.Tensor, ref: torch.Tensor, rewards: torch.Tensor, beta: float,
              w_desirable: float, w_undesirable: float) -> torch.Tensor:
    """GPT-NeoX's KTO: each half's KL reference is the other half's mean clamped log-ratio."""
    half = pol.shape[0] // 2
    ratio = pol - ref
    kl = [ratio[half:].detach().clamp(min=0).mean(), ratio[:half].detach().clamp(min=0).mean()]
    terms = []
    for i in range(pol.shape[0]):
        weight = w_desirable if rewards[i] > 0 else w_undesirable if rewards[i] < 0 else 0.0
        z = beta * rewards[i] * (ratio[i] - kl[0 if i < half else 1])
        terms.append(weight * (1 - torch.sigmoid(z)))
    return torch.stack(terms).mean()


def test_kto_matches_the_formula_with_gradients():
    beta, wd, wu = 0.2, 1.0, 1.5
    logits, labels, mask = batch(6, seed=5)
    ref_logits = torch.randn(6, SEQ, VOCAB, generator=torch.Generator().manual_seed(6))
    rewards = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    with torch.no_grad():
        reference = objective(train_impl="dpo").sequence_logps(ref_logits, labels, mask)
    obj = objective(train_impl="kto", kto_beta=beta, kto_desirable_weight=wd, kto_undesirable_weight=wu)
    loss, metrics = obj(logits, labels, mask, reference, rewards)
    pol, ref = plain_logps(logits, labels, mask), plain_logps(ref_logits, labels, mask)
    expected = plain_kto(pol, ref, rewards, beta, wd, wu)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(grad_of(loss, logits), grad_of(expected, logits), atol=1e-6, rtol=0)
    ratio = (pol - ref).detach()
    kl = 0.5 * (ratio[:3].clamp(min=0).mean() + ratio[3:].clamp(min=0).mean())
    assert metrics["kl"].item() == pytest.approx(kl.item(), abs=1e-6)


def test_kto_needs_two_documents_per_micro_batch():
    with pytest.raises(ValueError, match="at least 2 documents"):
        kto_loss(torch.zeros(1), torch.zeros(1), torch.ones(1), 0.1)


def test_reward_model_loss_matches_the_formula_with_gradients():
    z_loss = 0.01
    g = torch.Generator().manual_seed(7)
    values = torch.randn(6, SEQ, generator=g, requires_grad=True)  # the scalar head's outputs
    mask = torch.zeros(6, SEQ)
    ends = [4, 6, 3, 5, 6, 2]  # GPT-NeoX's --for-rm labels: only the final (eos) token
    for r, end in enumerate(ends):
        mask[r, end] = 1
    labels = torch.zeros(6, SEQ, dtype=torch.long)
    loss, metrics = objective(train_impl="rm", z_loss=z_loss)(values, labels, mask, None, None)
    # GPT-NeoX: gather the values at the nonzero loss-mask positions, pos first, then neg.
    picked = torch.stack([values[r, ends[r]] for r in range(6)])
    chosen, rejected = picked[:3], picked[3:]
    expected = -F.logsigmoid(chosen - rejected).mean() + (z_loss * (chosen ** 2 + rejected ** 2)).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(grad_of(loss, values), grad_of(expected, values), atol=1e-6, rtol=0)
    assert metrics["reward_accuracy"].item() == pytest.approx((chosen > rejected).float().mean().item())


def test_last_label_values_reads_each_rows_last_label_token():
    values = torch.arange(12.0).view(2, 6)
    mask = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.float)
    assert last_label_values(values, mask).tolist() == [2.0, 11.0]


def test_dpo_in_bf16_when_dpo_fp32_is_false():
    logits, labels, mask = batch(4, seed=8)
    logits16 = logits.detach().bfloat16().requires_grad_(True)
    obj = objective(train_impl="dpo", dpo_fp32=False)
    assert obj.sequence_logps(logits16, labels, mask).dtype == torch.bfloat16
    assert objective(train_impl="dpo").sequence_logps(logits16, labels, mask).dtype == torch.float32
    loss, _ = obj(logits16, labels, mask, torch.zeros(4), None)
    loss.backward()
    assert logits16.grad is not None and torch.isfinite(logits16.grad.float()).all()


def test_sequence_log_probs_and_dpo_are_pure_tensor_functions():
    # The building blocks alone (no model, no parallel state): the formula on plain numbers.
    tok = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert sequence_log_probs(tok, mask).tolist() == [-5.0, -1.0]
    loss, _ = dpo_loss(torch.tensor([-5.0]), torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-2.0]), 1.0)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(2.0))), abs=1e-6)
