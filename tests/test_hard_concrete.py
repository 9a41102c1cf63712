"""The shared hard-concrete gate: its samples, P(z > 0), gradients, eval and hardening."""

from __future__ import annotations

import math

import pytest
import torch

from wattpeft.methods.hard_concrete import (
    INIT_LOG_ALPHA,
    HardConcreteGate,
    fully_open_log_alpha,
    keep_threshold,
)


def _gate(shape, log_alpha: float | torch.Tensor, **kwargs) -> HardConcreteGate:
    gate = HardConcreteGate(shape, **kwargs)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.as_tensor(log_alpha, dtype=torch.float32).expand(gate.shape))
    return gate


def test_shapes_and_open_initialisation():
    for shape in [(6,), (4, 12), (3, 8)]:
        gate = HardConcreteGate(shape)
        assert gate.log_alpha.shape == torch.Size(shape)
        assert torch.all(gate.log_alpha == INIT_LOG_ALPHA)
        gate.eval()
        assert torch.all(gate() == 1.0)  # starts fully open: the ungated model
        assert gate.hard_mask().all()
        assert torch.all(gate.expected_open() > 0.98)
    assert HardConcreteGate(5).shape == torch.Size([5])
    assert INIT_LOG_ALPHA > fully_open_log_alpha() == pytest.approx(math.log(11.0))
    assert keep_threshold() == pytest.approx(-math.log(11.0))


def test_rejects_bad_stretch_and_temperature():
    with pytest.raises(ValueError):
        HardConcreteGate(3, stretch=(0.0, 1.1))
    with pytest.raises(ValueError):
        HardConcreteGate(3, stretch=(-0.1, 1.0))
    with pytest.raises(ValueError):
        HardConcreteGate(3, temperature=0.0)


def test_samples_lie_in_unit_interval_and_hit_both_ends():
    gate = _gate(50_000, 0.0)
    gate.train()
    z = gate(torch.Generator().manual_seed(0))
    assert z.min() >= 0.0 and z.max() <= 1.0
    # The stretch (-0.1, 1.1) puts probability mass on exactly 0 and exactly 1.
    # With log_alpha = 0 each end has P = sigmoid(-beta log 11) = 0.17.
    assert (z == 0.0).float().mean() > 0.1
    assert (z == 1.0).float().mean() > 0.1
    assert ((z > 0.0) & (z < 1.0)).any()


@pytest.mark.parametrize("log_alpha", [-2.0, 0.0, 1.5])
def test_empirical_open_rate_matches_expected_open(log_alpha):
    n = 40_000
    gate = _gate(n, log_alpha)
    gate.train()
    z = gate(torch.Generator().manual_seed(1))
    p = float(gate.expected_open().detach()[0])
    assert p == pytest.approx(1.0 / (1.0 + math.exp(-(log_alpha + (2 / 3) * math.log(11.0)))))
    rate = float((z > 0).float().mean())
    # 5 binomial standard errors: a false failure has probability below 1e-6.
    assert abs(rate - p) < 5.0 * math.sqrt(p * (1.0 - p) / n)


def test_gradients_reach_log_alpha_through_samples_and_penalty():
    gate = _gate(2_000, 0.5)
    gate.train()
    z = gate(torch.Generator().manual_seed(2))
    z.sum().backward()
    grad = gate.log_alpha.grad
    inside = (z > 0) & (z < 1)
    assert inside.any()
    assert torch.all(grad[inside] > 0)  # dz/dlog_alpha > 0 inside (0, 1)
    assert torch.all(grad[~inside] == 0)  # clamped samples carry no gradient

    gate.log_alpha.grad = None
    gate.l0_penalty().backward()
    p = gate.expected_open().detach()
    assert torch.allclose(gate.log_alpha.grad, p * (1 - p))  # d sigmoid / dx


def test_eval_is_deterministic():
    gate = _gate((3, 4), torch.linspace(-4.0, 4.0, 12).reshape(3, 4))
    gate.eval()
    first, second = gate(), gate(torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    expected = (torch.sigmoid(gate.log_alpha) * 1.2 - 0.1).clamp(0, 1)
    assert torch.equal(first, expected)
    gate.train()
    g = torch.Generator().manual_seed(4)
    assert not torch.equal(gate(g), gate(g))  # training samples differ


def test_hard_mask_follows_the_documented_rule():
    log_alpha = torch.tensor([[-6.0, -2.5, -2.3, -1.8], [-1.0, 0.0, 2.0, 6.0]])
    gate = _gate((2, 4), log_alpha)
    mask = gate.hard_mask()
    assert mask.dtype == torch.bool
    # Kept iff the deterministic (eval) gate is > 0, i.e. log_alpha > -log 11 = -2.398.
    assert torch.equal(mask, log_alpha > keep_threshold())
    gate.eval()
    assert torch.equal(mask, gate() > 0)
    # -2.3 and -1.8 are kept although P(z > 0) < 0.5: the rule is not expected_open > 0.5.
    assert mask[0, 2] and mask[0, 3] and gate.expected_open().detach()[0, 3] < 0.5
    assert torch.equal(gate.kept_count(dim=1), torch.tensor([2, 4]))
    assert torch.equal(gate.kept_count(dim=0), torch.tensor([1, 1, 2, 2]))
    assert int(gate.kept_count()) == 6
    assert gate.expected_kept(dim=1).shape == (2,)
    assert torch.allclose(gate.expected_kept(), gate.l0_penalty())


def test_l0_penalty_alone_closes_every_gate():
    torch.manual_seed(5)
    gate = HardConcreteGate((4, 3))
    optimiser = torch.optim.SGD(gate.parameters(), lr=2.0)
    for _ in range(300):
        optimiser.zero_grad()
        gate.l0_penalty().backward()
        optimiser.step()
    assert not gate.hard_mask().any()
    gate.eval()
    assert torch.all(gate() == 0.0)


def test_task_term_keeps_gates_open_against_a_small_penalty():
    torch.manual_seed(6)
    gate = HardConcreteGate((4, 3))
    gate.train()
    optimiser = torch.optim.SGD(gate.parameters(), lr=0.5)
    for _ in range(300):
        optimiser.zero_grad()
        task = ((1.0 - gate()) ** 2).sum()  # the task wants every gate at 1
        (task + 0.01 * gate.l0_penalty()).backward()
        optimiser.step()
    assert gate.hard_mask().all()
    gate.eval()
    assert torch.all(gate() == 1.0)
