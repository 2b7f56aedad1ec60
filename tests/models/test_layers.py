import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models.layers import EnsembleLinear, EnsembleMLP
from tests.tolerances import MEMBER_FORWARD


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("batch", [(5,), (2, 4), ()])
def test_linear_shapes(members: int, batch: tuple[int, ...]) -> None:
    layer = EnsembleLinear(members, 4, 6)
    assert layer.weight.shape == (members, 4, 6)
    assert layer.bias.shape == (members, 1, 6)
    assert layer(torch.randn(members, *batch, 4)).shape == (members, *batch, 6)


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("batch", [(5,), (2, 4)])
def test_mlp_shapes(members: int, batch: tuple[int, ...]) -> None:
    mlp = EnsembleMLP(members, 4, [16, 8], 3)
    output, hidden = mlp.forward_with_hidden(torch.randn(members, *batch, 4))
    assert output.shape == (members, *batch, 3)
    assert hidden.shape == (members, *batch, 8)
    assert mlp.hidden_features == 8


def test_linear_is_a_per_member_affine_map() -> None:
    layer = EnsembleLinear(3, 4, 2)
    x = torch.randn(3, 7, 4)
    expected = torch.stack([x[i] @ layer.weight[i] + layer.bias[i] for i in range(3)])
    torch.testing.assert_close(layer(x), expected)


@given(seed=st.integers(0, 2**32 - 1), fan_in=st.integers(1, 40), fan_out=st.integers(1, 40))
@settings(max_examples=20, deadline=None)
def test_one_member_equals_nn_linear_from_the_same_seed(seed: int, fan_in: int, fan_out: int) -> None:
    layer = EnsembleLinear(1, fan_in, fan_out, generators(seed))
    torch.manual_seed(seed)
    reference = nn.Linear(fan_in, fan_out)
    torch.testing.assert_close(layer.weight[0], reference.weight.T, rtol=0, atol=0)
    torch.testing.assert_close(layer.bias[0, 0], reference.bias, rtol=0, atol=0)
    bound = 1 / math.sqrt(fan_in)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound


def test_member_equals_single_member_ensemble_from_the_same_generator() -> None:
    ensemble = EnsembleMLP(3, 5, [16, 8], 2, generators(10, 11, 12))
    single = EnsembleMLP(1, 5, [16, 8], 2, generators(11))
    for (name, big), small in zip(ensemble.state_dict().items(), single.state_dict().values(), strict=True):
        torch.testing.assert_close(big[1:2], small, rtol=0, atol=0, msg=name)
    x = torch.randn(1, 9, 5)
    torch.testing.assert_close(ensemble(x.expand(3, -1, -1))[1:2], single(x), **MEMBER_FORWARD)  # other kernels


def test_changing_one_member_leaves_the_others_alone() -> None:
    mlp = EnsembleMLP(3, 4, [8], 2)
    x = torch.randn(3, 6, 4)
    before = mlp(x)
    with torch.no_grad():
        for parameter in mlp.parameters():
            parameter[0].add_(1.0)
    after = mlp(x)
    assert not torch.allclose(after[0], before[0])
    torch.testing.assert_close(after[1:], before[1:], rtol=0, atol=0)
    # Gradients do not cross members either.
    mlp.zero_grad()
    after[2].sum().backward()
    for parameter in mlp.parameters():
        assert parameter.grad is not None
        assert parameter.grad[:2].abs().max() == 0 and parameter.grad[2].abs().max() > 0


def test_hidden_is_the_last_relu_activation() -> None:
    mlp = EnsembleMLP(2, 4, [8, 6], 3)
    x = torch.randn(2, 5, 4)
    output, hidden = mlp.forward_with_hidden(x)
    assert (hidden >= 0).all()
    torch.testing.assert_close(mlp.output_layer(hidden), output)
    torch.testing.assert_close(mlp(x), output)


def test_no_hidden_layers_is_affine() -> None:
    mlp = EnsembleMLP(2, 4, [], 3)
    x = torch.randn(2, 5, 4)
    output, hidden = mlp.forward_with_hidden(x)
    assert hidden is x and mlp.hidden_features == 4
    torch.testing.assert_close(output, mlp.output_layer(x))


def test_keep_members_selects_and_reorders() -> None:
    mlp = EnsembleMLP(3, 4, [8], 2)
    x = torch.randn(3, 5, 4)
    full = mlp(x)
    mlp.keep_members_([2, 0])
    assert mlp.members == 2
    assert all(parameter.shape[0] == 2 for parameter in mlp.parameters())
    torch.testing.assert_close(mlp(x[[2, 0]]), full[[2, 0]])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="one generator per member"):
        EnsembleMLP(3, 4, [8], 2, generators(1, 2))
    with pytest.raises(ValueError, match="≥ 1"):
        EnsembleLinear(0, 4, 2)
    with pytest.raises(ValueError, match="out of range"):
        EnsembleMLP(2, 4, [8], 2).keep_members_([2])
