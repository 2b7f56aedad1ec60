import math
from collections.abc import Callable, Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from models.features import ObservationEncoder, ReacherFeatures
from models.networks import (
    PAPER_HIDDEN,
    ActionLikelihood,
    CategoricalActor,
    DiscreteTwinQ,
    EnsembleNetwork,
    GaussianTanhActor,
    TwinQ,
    ValueNet,
)
from tests.tolerances import MEMBER_FORWARD

JOINTS = ("shoulder", "elbow")
NAMES = (
    "joint_position.shoulder",
    "joint_position.elbow",
    "joint_velocity.shoulder",
    "joint_velocity.elbow",
    "goal_position.x",
    "goal_position.y",
)
D, A, N = 6, 2, 9
HIDDEN = (16, 8)
LOW, HIGH = torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 3.0])


def make_encoder(fit: bool = True) -> ObservationEncoder:
    encoder = ObservationEncoder.from_features(ReacherFeatures(NAMES, (0.5, 0.5), joint_names=JOINTS))
    if fit:
        encoder.fit(torch.randn(200, D, generator=torch.Generator().manual_seed(0)) * 2)
    return encoder


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


# Each network kind: a builder and its main output (a single tensor) for observations (E, *batch, D).
Build = Callable[[int, ObservationEncoder, Sequence[torch.Generator] | None], EnsembleNetwork]
Output = Callable[[EnsembleNetwork, Tensor], Tensor]


def _action(obs: Tensor) -> Tensor:
    return torch.tanh(obs[..., :A])  # a deterministic action per observation


KINDS: dict[str, tuple[Build, Output]] = {
    "gaussian": (
        lambda e, enc, g: GaussianTanhActor(e, enc, LOW, HIGH, HIDDEN, g),
        lambda net, obs: torch.cat(net(obs)[:2], dim=-1),
    ),
    "categorical": (lambda e, enc, g: CategoricalActor(e, enc, N, HIDDEN, g), lambda net, obs: net(obs)[0]),
    "twin_q": (lambda e, enc, g: TwinQ(e, enc, A, HIDDEN, g), lambda net, obs: net(obs, _action(obs)).movedim(0, 1)),
    "discrete_twin_q": (lambda e, enc, g: DiscreteTwinQ(e, enc, N, HIDDEN, g), lambda net, obs: net(obs).movedim(0, 1)),
    "value": (lambda e, enc, g: ValueNet(e, enc, HIDDEN, g), lambda net, obs: net(obs)),
}


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_shapes(members: int, batch: tuple[int, ...]) -> None:
    encoder = make_encoder()
    obs = torch.randn(members, *batch, D)
    gaussian = GaussianTanhActor(members, encoder, LOW, HIGH, HIDDEN)
    mean, log_std, hidden = gaussian(obs)
    assert mean.shape == log_std.shape == (members, *batch, A) and hidden.shape == (members, *batch, HIDDEN[-1])
    action, log_prob = gaussian.act(obs, torch.randn(members, *batch, A))
    assert action.shape == (members, *batch, A) and log_prob.shape == (members, *batch)
    assert gaussian.log_prob(obs, action).shape == (members, *batch)
    assert gaussian.deterministic(obs).shape == (members, *batch, A)

    categorical = CategoricalActor(members, encoder, N, HIDDEN)
    logits, hidden = categorical(obs)
    assert logits.shape == (members, *batch, N) and hidden.shape == (members, *batch, HIDDEN[-1])
    index, log_prob = categorical.act(obs, torch.rand(members, *batch, N))
    assert index.shape == log_prob.shape == (members, *batch) and index.dtype == torch.long
    assert categorical.log_prob(obs, index).shape == (members, *batch)
    assert categorical.deterministic(obs).shape == (members, *batch)

    q, hidden = TwinQ(members, encoder, A, HIDDEN).forward_with_hidden(obs, torch.randn(members, *batch, A))
    assert q.shape == (2, members, *batch) and hidden.shape == (2, members, *batch, HIDDEN[-1])
    assert DiscreteTwinQ(members, encoder, N, HIDDEN)(obs).shape == (2, members, *batch, N)
    assert ValueNet(members, encoder, HIDDEN)(obs).shape == (members, *batch)


def test_paper_hidden_sizes() -> None:
    actor = CategoricalActor(1, make_encoder(), N)
    assert actor.trunk.hidden == PAPER_HIDDEN == (512, 256, 128)
    assert actor(torch.randn(1, 4, D))[1].shape == (1, 4, 128)


@pytest.mark.parametrize("kind", KINDS)
def test_member_equals_single_member_network_from_the_same_generator(kind: str) -> None:
    build, output = KINDS[kind]
    encoder = make_encoder()
    ensemble = build(3, encoder, generators(7, 8, 9))
    single = build(1, encoder, generators(8))
    for name, value in single.state_dict().items():  # the same draws: bit-identical, on any CPU
        member = ensemble.state_dict()[name]
        heads = value.shape[0] if value.ndim and member.shape[0] == 3 * value.shape[0] else 0  # twin Qs: 2 heads
        expected = member[[head * 3 + 1 for head in range(heads)]] if heads else member  # member 1 of each head
        torch.testing.assert_close(expected, value, rtol=0, atol=0, msg=name)
    obs = torch.randn(1, 10, D)  # the forward pass runs other kernel shapes: equal to float32 rounding
    torch.testing.assert_close(output(ensemble, obs.expand(3, -1, -1))[1:2], output(single, obs), **MEMBER_FORWARD)


@pytest.mark.parametrize("kind", KINDS)
def test_changing_member_zero_leaves_member_one_alone(kind: str) -> None:
    build, output = KINDS[kind]
    network = build(3, make_encoder(), None)
    obs = torch.randn(3, 10, D)
    before = output(network, obs)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter[0].add_(0.5)
            if isinstance(network, (TwinQ, DiscreteTwinQ)):
                parameter[3].add_(0.5)  # member 0's second head
    after = output(network, obs)
    assert not torch.allclose(after[0], before[0])
    torch.testing.assert_close(after[1:], before[1:], rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_select_members(kind: str) -> None:
    build, output = KINDS[kind]
    network = build(3, make_encoder(), None)
    obs = torch.randn(3, 4, D)
    selected = network.select_members([2, 0])
    assert selected.members == 2 and network.members == 3
    torch.testing.assert_close(output(selected, obs[[2, 0]]), output(network, obs)[[2, 0]])
    with pytest.raises(ValueError, match="member indices"):
        network.select_members([3])


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_carries_the_normalizer(kind: str) -> None:
    build, output = KINDS[kind]
    trained = build(2, make_encoder(), None)
    assert {"encoder.normalizer.mean", "encoder.normalizer.std"} <= set(trained.state_dict())
    restored = build(2, make_encoder(fit=False), None)
    restored.load_state_dict(trained.state_dict())
    obs = torch.randn(2, 5, D)
    torch.testing.assert_close(output(restored, obs), output(trained, obs), rtol=0, atol=0)


def test_shared_encoder_is_one_module() -> None:
    encoder = make_encoder(fit=False)
    actor = GaussianTanhActor(2, encoder, LOW, HIGH, HIDDEN)
    critic = TwinQ(2, encoder, A, HIDDEN)
    assert actor.encoder is critic.encoder
    assert not list(encoder.parameters())  # nothing for two optimisers to fight over
    encoder.fit(torch.randn(100, D) * 3)
    assert actor.state_dict()["encoder.normalizer.std"][0] != 1.0
    torch.testing.assert_close(actor.state_dict()["encoder.normalizer.mean"], critic.encoder.normalizer.mean)


def test_twin_heads_are_different_networks() -> None:
    q = TwinQ(2, make_encoder(), A, HIDDEN)(torch.randn(2, 6, D), torch.randn(2, 6, A))
    assert not torch.allclose(q[0], q[1])


# --------------------------------------------------------------------------- Gaussian actor


def gaussian_actor(
    members: int = 2, dtype: torch.dtype = torch.float64, likelihood: ActionLikelihood = "tanh-mean"
) -> GaussianTanhActor:
    seeds = generators(*range(members))
    return GaussianTanhActor(members, make_encoder(), LOW, HIGH, HIDDEN, seeds, likelihood=likelihood).to(dtype)


@given(scale=st.floats(0.0, 1e4), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_gaussian_actions_stay_in_bounds(scale: float, seed: int) -> None:
    actor = gaussian_actor(dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(2, 8, D, generator=generator) * 3
    action, log_prob = actor.act(obs, torch.randn(2, 8, A, generator=generator) * scale)
    assert (action >= LOW).all() and (action <= HIGH).all()
    assert torch.isfinite(log_prob).all()


def test_gaussian_log_prob_of_sampled_action_matches() -> None:
    actor = gaussian_actor(likelihood="squashed")
    obs = torch.randn(2, 64, D, dtype=torch.float64)
    noise = torch.randn(2, 64, A, dtype=torch.float64)
    action, log_prob = actor.act(obs, noise)
    torch.testing.assert_close(actor.log_prob(obs, action), log_prob, rtol=1e-9, atol=1e-9)
    # Same density as torch.distributions' tanh + affine transformed Gaussian.
    mean, log_std, _ = actor(obs)
    reference = TransformedDistribution(
        Normal(mean, log_std.exp()),
        [TanhTransform(), AffineTransform((LOW + HIGH).double() / 2, (HIGH - LOW).double() / 2)],
    )
    reference_log_prob: Tensor = reference.log_prob(action)  # type: ignore[no-untyped-call]
    torch.testing.assert_close(reference_log_prob.sum(-1), log_prob, rtol=1e-7, atol=1e-7)


def test_gaussian_log_prob_float32_round_trip() -> None:
    actor = gaussian_actor(dtype=torch.float32, likelihood="squashed")
    obs = torch.randn(2, 64, D)
    action, log_prob = actor.act(obs, torch.randn(2, 64, A))
    torch.testing.assert_close(actor.log_prob(obs, action), log_prob, rtol=1e-3, atol=1e-3)


def test_gaussian_tanh_mean_log_prob_is_a_normal_around_the_squashed_mean() -> None:
    actor = gaussian_actor()
    obs = torch.randn(2, 64, D, dtype=torch.float64)
    action = LOW.double() + torch.rand(2, 64, A, dtype=torch.float64) * (HIGH - LOW).double()
    action[:, :8] = HIGH.double()  # bang-bang actions on the bounds: finite, no clamp
    action[:, 8:16] = LOW.double()
    mean, log_std, _ = actor(obs)
    # In torque units: a Normal around the rescaled tanh(mean), σ scaled by the half range.
    half = (HIGH - LOW).double() / 2
    reference = Normal(LOW.double() + (torch.tanh(mean) + 1) * half, log_std.exp() * half)
    reference_log_prob: Tensor = reference.log_prob(action)  # type: ignore[no-untyped-call]
    torch.testing.assert_close(actor.log_prob(obs, action), reference_log_prob.sum(-1))
    assert torch.isfinite(actor.log_prob(obs, action)).all()


@pytest.mark.parametrize("likelihood", ["tanh-mean", "squashed"])
def test_awr_on_bang_bang_expert_actions_recovers_them(likelihood: ActionLikelihood) -> None:
    """Weighted maximum likelihood (AWR, w = 1) on a bang-bang expert recovers its actions: the bench's fault.

    The expert's torques are on the bounds in most states (as the reacher's analytic expert's), interior
    in the others. With ``tanh-mean`` the deterministic action is within 0.25 (of the half range, mean
    over states and joints) after 400 Adam steps. ``squashed`` scores bound actions at u = atanh(1 - 1e-6)
    = ±7.25: σ grows to its bound, where the tanh-bounded log-std saturates, and the mean barely moves
    (error 0.86): the cause of ``bench_correctness.py``'s
    failing IQL seeds.
    """
    data = torch.Generator().manual_seed(100)
    obs = torch.randn(1, 256, D, generator=data) * 2
    shoulder = torch.where(obs[..., 4] > 0, HIGH[0], LOW[0])  # bang-bang everywhere
    interior = (obs[..., 5] * 0.5).clamp(-0.9, 0.9)  # normalised, inside the box
    elbow_y = torch.where(obs[..., 0] > 0, interior, torch.sign(obs[..., 5]))  # bang-bang in half of the states
    elbow = LOW[1] + (elbow_y + 1) / 2 * (HIGH[1] - LOW[1])
    expert = torch.stack([shoulder, elbow], dim=-1)
    actor = GaussianTanhActor(1, make_encoder(), LOW, HIGH, (64, 64), generators(0), likelihood=likelihood)
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    for _ in range(400):
        loss = -actor.log_prob(obs, expert).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        error = float(((actor.deterministic(obs) - expert) / (HIGH - LOW) * 2).abs().mean())
        assert torch.isfinite(actor.log_prob(obs, expert)).all()
    if likelihood == "tanh-mean":
        assert error < 0.25  # 0.15 measured
    else:  # the fault, kept as an option: documented, and measured here so that the docstring stays true
        assert error > 0.6  # 0.86 measured


def test_gaussian_deterministic_action() -> None:
    actor = gaussian_actor()
    obs = torch.randn(2, 16, D, dtype=torch.float64)
    mean, _, _ = actor(obs)
    action, log_prob = actor.act(obs, None)
    torch.testing.assert_close(actor.deterministic(obs), action)
    torch.testing.assert_close(action, LOW.double() + (torch.tanh(mean) + 1) / 2 * (HIGH - LOW).double())
    torch.testing.assert_close(actor.act(obs, torch.zeros_like(mean)), (action, log_prob))
    assert torch.isfinite(actor.log_prob(obs, action)).all()


def test_gaussian_saturated_actions_have_finite_log_prob() -> None:
    actor = gaussian_actor(dtype=torch.float32)
    with torch.no_grad():
        actor.trunk.output_layer.bias[..., :A] = 60.0  # tanh(mean) == 1 in float32
    obs = torch.randn(2, 8, D)
    action = actor.deterministic(obs)
    torch.testing.assert_close(action, HIGH.expand_as(action))
    assert torch.isfinite(actor.act(obs)[1]).all()
    assert torch.isfinite(actor.log_prob(obs, action)).all()
    assert torch.isfinite(actor.log_prob(obs, LOW.expand_as(action))).all()


def test_gaussian_log_std_stays_in_bounds() -> None:
    actor = GaussianTanhActor(1, make_encoder(), LOW, HIGH, HIDDEN, log_std_bounds=(-3.0, 1.0))
    obs = torch.randn(1, 8, D)
    for bias in (-1e3, 1e3):
        with torch.no_grad():
            actor.trunk.output_layer.bias[..., A:] = bias
        log_std = actor(obs)[1]
        assert (log_std >= -3.0).all() and (log_std <= 1.0).all()
        assert math.isclose(float(log_std.detach().mean()), -3.0 if bias < 0 else 1.0, abs_tol=1e-5)


def test_gaussian_bounds_are_saved_buffers() -> None:
    actor = gaussian_actor()
    assert torch.equal(actor.state_dict()["action_low"], LOW.double())
    assert torch.equal(actor.state_dict()["action_high"], HIGH.double())
    with pytest.raises(ValueError, match="high > low"):
        GaussianTanhActor(1, make_encoder(), HIGH, LOW, HIDDEN)
    with pytest.raises(ValueError, match="same non-empty shape"):
        GaussianTanhActor(1, make_encoder(), LOW, HIGH[:1], HIDDEN)


# --------------------------------------------------------------------------- categorical actor


def test_categorical_log_prob_is_log_softmax() -> None:
    actor = CategoricalActor(2, make_encoder(), N, HIDDEN)
    obs = torch.randn(2, 5, D)
    index = torch.randint(N, (2, 5))
    logits, _ = actor(obs)
    expected = torch.log_softmax(logits, -1).gather(-1, index[..., None])[..., 0]
    torch.testing.assert_close(actor.log_prob(obs, index), expected)


def test_categorical_gumbel_sampling_is_reproducible_and_argmax_without_noise() -> None:
    actor = CategoricalActor(2, make_encoder(), N, HIDDEN)
    obs = torch.randn(2, 50, D)
    uniform = torch.rand(2, 50, N)
    first, first_log_prob = actor.act(obs, uniform)
    second, second_log_prob = actor.act(obs, uniform.clone())
    assert torch.equal(first, second) and torch.equal(first_log_prob, second_log_prob)
    torch.testing.assert_close(first_log_prob, actor.log_prob(obs, first))
    greedy, greedy_log_prob = actor.act(obs, None)
    assert torch.equal(greedy, actor(obs)[0].argmax(-1)) and torch.equal(greedy, actor.deterministic(obs))
    assert (greedy_log_prob >= first_log_prob - 1e-6).all()


def test_categorical_gumbel_samples_follow_the_policy() -> None:
    actor = CategoricalActor(1, make_encoder(), N, HIDDEN)
    with torch.no_grad():
        actor.trunk.output_layer.bias[0, 0] = torch.linspace(-1.0, 1.0, N)
    samples = 20_000
    obs = torch.randn(1, 1, D).expand(1, samples, D)
    index, _ = actor.act(obs, torch.rand(1, samples, N, generator=torch.Generator().manual_seed(0)))
    frequency = torch.bincount(index.flatten(), minlength=N).float() / samples
    torch.testing.assert_close(frequency, actor(obs[:, :1])[0].softmax(-1)[0, 0], atol=0.015, rtol=0)


def test_categorical_extreme_uniforms_are_safe() -> None:
    actor = CategoricalActor(1, make_encoder(), N, HIDDEN)
    obs = torch.randn(1, 2, D)
    uniform = torch.zeros(1, 2, N)
    uniform[0, 0, 4] = 1.0  # a 1 wins everywhere
    uniform[0, 1, :] = 1.0
    uniform[0, 1, 6] = 0.0  # a 0 never wins
    index, log_prob = actor.act(obs, uniform)
    assert index[0, 0] == 4 and index[0, 1] != 6
    assert torch.isfinite(log_prob).all()


# --------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(kind: str) -> None:
    build, output = KINDS[kind]
    network = build(3, make_encoder(), generators(1, 2, 3))
    obs = torch.randn(3, 16, D)
    expected = output(network, obs)
    torch.testing.assert_close(output(network.cuda(), obs.cuda()).cpu(), expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- export


class _Deterministic(torch.nn.Module):
    def __init__(self, actor: GaussianTanhActor | CategoricalActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, observation: Tensor) -> Tensor:
        return self.actor.deterministic(observation)


@pytest.mark.parametrize("discrete", [False, True])
def test_deterministic_policy_exports_with_a_dynamic_batch(discrete: bool) -> None:
    """torch.export (what the dynamo ONNX exporter builds on) captures the whole graph."""
    encoder = make_encoder()
    actor = CategoricalActor(1, encoder, N, HIDDEN) if discrete else GaussianTanhActor(1, encoder, LOW, HIGH, HIDDEN)
    policy = _Deterministic(actor)
    program = torch.export.export(policy, (torch.randn(1, 3, D),), dynamic_shapes=({1: torch.export.Dim("batch")},))
    obs = torch.randn(1, 11, D)
    torch.testing.assert_close(program.module()(obs), policy(obs), rtol=0, atol=0)


@pytest.mark.parametrize("hidden", [HIDDEN, ()])
def test_q_of_k_actions_per_state_equals_q_on_each_state_repeated_k_times(hidden: tuple[int, ...]) -> None:
    members, states, k = 3, 5, 4
    generator = torch.Generator().manual_seed(1)
    critic = TwinQ(members, make_encoder(), A, hidden, [torch.Generator().manual_seed(i) for i in range(members)])
    obs = torch.randn(members, states, D, generator=generator)
    actions = torch.randn(members, states, k, A, generator=generator)
    repeated = obs.unsqueeze(2).expand(members, states, k, D)
    expected = critic(repeated.reshape(members, -1, D), actions.reshape(members, -1, A))
    q = critic.forward_actions(obs, actions)
    assert q.shape == (2, members, states, k)
    torch.testing.assert_close(q, expected.reshape(2, members, states, k), **MEMBER_FORWARD)


def test_k_samples_per_state_equal_samples_on_each_state_repeated_k_times() -> None:
    members, states, k = 2, 6, 3
    generator = torch.Generator().manual_seed(2)
    actor = GaussianTanhActor(members, make_encoder(), LOW, HIGH, HIDDEN)
    obs = torch.randn(members, states, D, generator=generator)
    noise = torch.randn(members, states, k, A, generator=generator)
    repeated = obs.unsqueeze(2).expand(members, states, k, D).reshape(members, -1, D)
    expected_action, expected_log_prob = actor.act(repeated, noise.reshape(members, -1, A))
    action, log_prob = actor.act_many(obs, noise)
    torch.testing.assert_close(action, expected_action.reshape(members, states, k, A), **MEMBER_FORWARD)
    torch.testing.assert_close(log_prob, expected_log_prob.reshape(members, states, k), **MEMBER_FORWARD)
