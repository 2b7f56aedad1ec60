"""The loss maths on tiny hand-computed cases."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.train.augment import categorical_consistency, gaussian_consistency, latent_consistency
from pipeline.train.cql import conservative_gap
from pipeline.train.iql import awr_weights, expectile_loss


def test_expectile_loss_weights_the_two_sides() -> None:
    diff = torch.tensor([2.0, -2.0, 0.0])
    torch.testing.assert_close(expectile_loss(diff, 0.8), torch.tensor([0.8 * 4, 0.2 * 4, 0.0]))
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff**2)


@settings(deadline=None, max_examples=50)
@given(st.floats(0.01, 0.99), st.lists(st.floats(-10, 10), min_size=2, max_size=20))
def test_expectile_minimiser_is_above_the_mean_for_tau_above_half(tau: float, values: list[float]) -> None:
    """argmin_v E[L_τ(x - v)] is the τ-expectile: ≥ mean when τ ≥ ½ (and = mean at ½)."""
    x = torch.tensor(values, dtype=torch.float64)
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([v], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = expectile_loss(x - v, tau).mean()
        torch.autograd.backward(loss)
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    mean = float(x.mean())
    if tau > 0.5:
        assert float(v) >= mean - 1e-6
    elif tau < 0.5:
        assert float(v) <= mean + 1e-6
    # first-order condition of the expectile
    residual = torch.where(x - v < 0, 1 - tau, tau) * (x - v)
    assert abs(float(residual.sum())) < 1e-5 * (1 + float(x.abs().sum()))


def test_gaussian_consistency_is_zero_iff_outputs_agree() -> None:
    mean = torch.tensor([[[0.5, -0.5]]])
    log_std = torch.tensor([[[-1.0, 0.0]]])
    zero = gaussian_consistency(mean, log_std, mean.clone(), log_std.clone(), mean.clone())
    torch.testing.assert_close(zero, torch.zeros(1))
    shifted = gaussian_consistency(mean, log_std, mean + 1.0, log_std + 2.0, mean.clone())
    torch.testing.assert_close(shifted, torch.tensor([1.0 + 4.0]))


def test_gaussian_consistency_stops_the_gradient_of_the_original_branch() -> None:
    mean = torch.zeros(1, 1, 2, requires_grad=True)
    log_std = torch.zeros(1, 1, 2, requires_grad=True)
    mean_g = torch.ones(1, 1, 2, requires_grad=True)
    log_std_g = torch.ones(1, 1, 2, requires_grad=True)
    torch.autograd.backward(gaussian_consistency(mean, log_std, mean_g, log_std_g, mean.detach()).sum())
    assert mean.grad is None and log_std.grad is None
    assert mean_g.grad is not None and log_std_g.grad is not None


def test_categorical_consistency_is_the_kl_divergence() -> None:
    p = torch.tensor([[[0.7, 0.2, 0.1]]])
    q = torch.tensor([[[0.5, 0.25, 0.25]]])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p.flatten().tolist(), q.flatten().tolist(), strict=True))
    torch.testing.assert_close(categorical_consistency(p.log(), q.log()), torch.tensor([expected]))
    torch.testing.assert_close(categorical_consistency(p.log(), p.log() + 3.0), torch.zeros(1))  # logits shift


def test_latent_consistency_is_per_member() -> None:
    hidden = torch.zeros(2, 3, 4)
    hidden_g = torch.stack([torch.zeros(3, 4), torch.full((3, 4), 2.0)])
    torch.testing.assert_close(latent_consistency(hidden, hidden_g), torch.tensor([0.0, 4.0]))


@pytest.mark.parametrize("tau", [0.7, 0.8])
def test_expectile_loss_is_non_negative(tau: float) -> None:
    assert bool((expectile_loss(torch.linspace(-3, 3, 13), tau) >= 0).all())


def test_awr_weights_are_exponentiated_advantages_clipped() -> None:
    advantage = torch.tensor([-1.0, 0.0, 0.5, 10.0])
    expected = torch.tensor([math.exp(-3.0), 1.0, math.exp(1.5), 100.0])
    torch.testing.assert_close(awr_weights(advantage, temperature=3.0, max_weight=100.0), expected)


def test_discrete_cql_gap_by_hand() -> None:
    q_all = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    q_data = torch.tensor([3.0, 0.0])
    gap_0 = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 3.0
    gap_1 = math.log(3.0)
    torch.testing.assert_close(conservative_gap(q_all, q_data), torch.tensor((gap_0 + gap_1) / 2))


def test_sampled_cql_gap_is_zero_when_every_sample_equals_the_data_value() -> None:
    q_data = torch.tensor([[0.7, -0.2]])
    samples = q_data[..., None].expand(1, 2, 30)
    torch.testing.assert_close(conservative_gap(samples, q_data, log_count=math.log(30)), torch.zeros(1))


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=9))
def test_cql_gap_is_non_negative_for_dataset_actions_among_the_candidates(values: list[float]) -> None:
    q_all = torch.tensor([values], dtype=torch.float64)
    for index in range(len(values)):
        assert float(conservative_gap(q_all, q_all[:, index])) >= -1e-12
