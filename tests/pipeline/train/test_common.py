"""What IQL and CQL share: target critics that share the encoder, and the features of s and s′ once per update."""

import contextlib

import pytest
import torch

from models.features import GenericFeatures, Normalizer, ObservationEncoder
from models.networks import GaussianTanhActor, TwinQ, ValueNet
from pipeline.train import cql
from pipeline.train.buffer import Batch
from pipeline.train.config import TrainConfig
from pipeline.train.cql import CQL
from pipeline.train.iql import IQL
from tests.tolerances import MEMBER_FORWARD

MEMBERS, STATES, WIDTH, HIDDEN = 2, 8, 2, (16, 16)
LOW, HIGH = torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.0])


def algorithm(name: str) -> IQL | CQL:
    """A 2-member continuous IQL or CQL on 3 generic features, built from fixed seeds."""
    encoder = ObservationEncoder(GenericFeatures(("a", "b", "c"), ["a"]), Normalizer(4))
    seeds = [torch.Generator().manual_seed(i) for i in range(MEMBERS)]
    actor = GaussianTanhActor(MEMBERS, encoder, LOW, HIGH, HIDDEN, seeds)
    critic = TwinQ(MEMBERS, encoder, WIDTH, HIDDEN, seeds)
    config = TrainConfig.model_validate({"algorithm": name, "seeds": MEMBERS, "cql": {"sampled_actions": 3}})
    if name == "iql":
        return IQL(config, actor, critic, ValueNet(MEMBERS, encoder, HIDDEN, seeds), None)
    return CQL(config, actor, critic, None, [torch.Generator().manual_seed(10 + i) for i in range(MEMBERS)])


def batch() -> Batch:
    data = torch.Generator().manual_seed(3)
    return Batch(
        observations=torch.randn(MEMBERS, STATES, 3, generator=data),
        actions=torch.rand(MEMBERS, STATES, WIDTH, generator=data) * 2 - 1,
        rewards=torch.rand(MEMBERS, STATES, generator=data),
        next_observations=torch.randn(MEMBERS, STATES, 3, generator=data),
        terminals=torch.zeros(MEMBERS, STATES),
    )


def counting(encoder: ObservationEncoder) -> list[torch.Tensor]:
    """The inputs of every call of the encoder's feature module, from now on."""
    calls: list[torch.Tensor] = []

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        calls.append(args[0])

    encoder.features.register_forward_hook(record)
    return calls


def test_an_encoder_reuses_each_observation_tensor_within_reuse_and_only_there() -> None:
    encoder = ObservationEncoder(GenericFeatures(("a", "b", "c"), ["a"]), Normalizer(4))
    calls = counting(encoder)
    raw, other = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    fresh = encoder(raw)
    with encoder.reuse():
        first = encoder(raw)
        assert encoder(raw) is first and len(calls) == 2
        encoder(other)
        assert len(calls) == 3
        raw.add_(1.0)  # modified in place: encoded again
        torch.testing.assert_close(encoder(raw), encoder._encode(raw))
        assert len(calls) == 5
        tracked = other.clone().requires_grad_(True)  # its features carry a graph: never reused
        encoder(tracked)
        encoder(tracked)
        assert len(calls) == 7
    torch.testing.assert_close(first, fresh)
    encoder(raw)
    assert len(calls) == 8


def test_target_critics_share_the_encoder_and_nothing_else() -> None:
    agent = algorithm("cql")
    assert agent.critic_target.encoder is agent.critic.encoder
    online = dict(agent.critic.trunk.named_parameters())
    for name, parameter in agent.critic_target.trunk.named_parameters():
        assert parameter.data_ptr() != online[name].data_ptr() and not parameter.requires_grad
        torch.testing.assert_close(parameter, online[name], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["iql", "cql"])
def test_an_update_encodes_s_and_s_next_once_and_equals_encoding_every_time(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    minibatch = batch()
    reused = algorithm(name)
    calls = counting(reused.critic.encoder)
    reused.update(minibatch, None, step=1)
    assert len(calls) == 2
    assert {id(c) for c in calls} == {id(minibatch.observations), id(minibatch.next_observations)}

    def no_reuse(self: ObservationEncoder) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    monkeypatch.setattr(ObservationEncoder, "reuse", no_reuse)
    every_time = algorithm(name)
    calls = counting(every_time.critic.encoder)
    every_time.update(minibatch, None, step=1)
    assert len(calls) > 2  # without reuse the networks encode the same tensors again
    for module_name, module in reused.modules.items():
        expected = dict(every_time.modules[module_name].named_parameters())
        for parameter_name, parameter in module.named_parameters():
            torch.testing.assert_close(parameter, expected[parameter_name], **MEMBER_FORWARD)


def test_the_cql_actor_step_gives_the_critic_no_gradient_and_the_same_update(monkeypatch: pytest.MonkeyPatch) -> None:
    minibatch = batch()
    agent = algorithm("cql")
    assert isinstance(agent, CQL)
    agent.update(minibatch, None, step=1)
    critic_gradients = {name: p.grad for name, p in agent.critic.named_parameters() if p.grad is not None}
    assert all(p.requires_grad for p in agent.critic.parameters())  # restored after the actor step

    def not_frozen(module: torch.nn.Module) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    monkeypatch.setattr(cql, "frozen", not_frozen)
    reference = algorithm("cql")
    reference.update(minibatch, None, step=1)
    for module_name, module in agent.modules.items():
        expected = dict(reference.modules[module_name].named_parameters())
        for parameter_name, parameter in module.named_parameters():
            torch.testing.assert_close(parameter, expected[parameter_name], **MEMBER_FORWARD)
    # The critic's gradients are its own loss's alone; unfrozen, the actor's loss added to them.
    reference_gradients = {name: p.grad for name, p in reference.critic.named_parameters() if p.grad is not None}
    assert critic_gradients.keys() == reference_gradients.keys() and critic_gradients
    assert any(not torch.allclose(critic_gradients[name], reference_gradients[name]) for name in critic_gradients)
