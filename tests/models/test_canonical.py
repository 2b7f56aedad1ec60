import io
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from models.canonical import CanonicalWrapper
from models.symmetry import BoundSymmetry, GroupElement, SymmetrySpec, SymmetrySpecError
from tests.models.test_symmetry import ACT, O2, O2_DISCRETE, OBS, ROTATION, mirror_spec_dict
from tests.sim.test_behaviour import observations

SHOULDER = OBS.index("joint_position.shoulder")


def mlp(seed: int, outputs: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, outputs)).to(dtype)


def away_from_the_seam(wrapper: CanonicalWrapper, observation: torch.Tensor) -> bool:
    """The canonical shoulder angle is not at the ±π seam, where the wrapped observation itself jumps."""
    canonical, _ = wrapper.canonicalize(observation)
    return bool((math.pi - canonical[..., SHOULDER].abs() > 1e-4).all())


def moved(symmetry: BoundSymmetry, observation: torch.Tensor, theta: float, mirror: bool) -> torch.Tensor:
    return symmetry.act_observation(observation, GroupElement.of(theta, mirror, dtype=observation.dtype))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), observation=observations, theta=st.floats(-math.pi, math.pi))
def test_wrapped_net_is_invariant_to_every_rotation(seed: int, observation: np.ndarray, theta: float) -> None:
    for dtype, atol in ((torch.float64, 1e-6), (torch.float32, 1e-5)):
        wrapper = CanonicalWrapper(mlp(seed, 2, dtype), ROTATION)
        o = torch.as_tensor(observation, dtype=dtype)
        rotated = moved(ROTATION, o, theta, False)
        assume(away_from_the_seam(wrapper, o))
        torch.testing.assert_close(wrapper(rotated), wrapper(o), atol=atol, rtol=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), observation=observations, theta=st.floats(-math.pi, math.pi), mirror=st.booleans())
def test_mirror_orbit_average_makes_outputs_invariant_and_equivariant(
    seed: int, observation: np.ndarray, theta: float, mirror: bool
) -> None:
    o = torch.as_tensor(observation)
    g_o = moved(O2, o, theta, mirror)
    invariant = CanonicalWrapper(mlp(seed, 3), O2, output="invariant")
    assume(away_from_the_seam(invariant, o))
    torch.testing.assert_close(invariant(g_o), invariant(o), atol=1e-6, rtol=0)
    # Continuous torques flip under mirror: f(g·o) = g·f(o).
    action = CanonicalWrapper(mlp(seed, 2), O2, output="action")
    g = GroupElement.of(theta, mirror)
    torch.testing.assert_close(action(g_o), O2.act_action(action(o), g), atol=1e-6, rtol=0)
    # Discrete logits are relabelled: f(g·o)[g·i] = f(o)[i].
    discrete = CanonicalWrapper(mlp(seed, 9), O2_DISCRETE, output="discrete")
    relabelled = O2_DISCRETE.act_discrete_action(torch.arange(9), g)
    torch.testing.assert_close(discrete(g_o)[relabelled], discrete(o), atol=1e-6, rtol=0)


def test_the_property_is_not_vacuous() -> None:
    net, o = mlp(0, 2), torch.tensor([0.3, 0.5, 0.1, -0.2, 0.7, 0.0], dtype=torch.float64)
    assert (net(moved(ROTATION, o, 1.0, False)) - net(o)).abs().max() > 1e-3  # a plain MLP is not invariant
    wrapper = CanonicalWrapper(net, O2, output="invariant")
    torch.testing.assert_close(
        wrapper(o), 0.5 * (net(o) + net(moved(O2, o, 0.0, True)))
    )  # goal on +x: already canonical


def test_canonical_frame_puts_the_goal_on_the_x_axis() -> None:
    wrapper = CanonicalWrapper(mlp(0, 2), ROTATION)
    goal = 0.7 * torch.tensor([math.cos(2.0), math.sin(2.0)], dtype=torch.float64)
    o = torch.cat([torch.tensor([2.5, 0.3, 0.1, 0.2], dtype=torch.float64), goal])
    canonical, angle = wrapper.canonicalize(o)
    assert abs(float(angle) - 2.0) < 1e-12
    torch.testing.assert_close(canonical[4:], torch.tensor([0.7, 0.0], dtype=torch.float64))
    assert abs(float(canonical[SHOULDER]) - 0.5) < 1e-12


def test_leading_batch_dims() -> None:
    wrapper = CanonicalWrapper(mlp(1, 9, torch.float32), O2_DISCRETE, output="discrete")
    batch = torch.randn(4, 3, 6)
    out = wrapper(batch)
    assert out.shape == (4, 3, 9)
    torch.testing.assert_close(out[2, 1], wrapper(batch[2, 1]))


def test_traceable_without_data_dependent_control_flow() -> None:
    wrapper = CanonicalWrapper(mlp(2, 2, torch.float32), O2, output="action")
    example = torch.randn(5, 6)
    exported = torch.export.export(wrapper, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    other = torch.randn(11, 6)
    torch.testing.assert_close(exported.module()(other), wrapper(other))


def test_onnx_round_trip() -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    wrapper = CanonicalWrapper(mlp(3, 9, torch.float32), O2_DISCRETE, output="discrete")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (torch.randn(2, 6),),
            buffer,  # type: ignore[arg-type]  # a file-like object works, the annotation says path
            dynamo=False,
            input_names=["obs"],
            dynamic_axes={"obs": {0: "b"}},
        )
    session = ort.InferenceSession(buffer.getvalue())
    batch = torch.randn(7, 6)
    np.testing.assert_allclose(session.run(None, {"obs": batch.numpy()})[0], wrapper(batch).detach(), atol=1e-5)


def test_invalid_wrappers_are_rejected() -> None:
    with pytest.raises(SymmetrySpecError, match="'joint_velocity' is not a rotate2d pair"):
        CanonicalWrapper(mlp(0, 2), ROTATION, frame_field="joint_velocity")
    with pytest.raises(SymmetrySpecError, match="discrete_action_table"):
        CanonicalWrapper(mlp(0, 9), O2, output="discrete")
    with pytest.raises(SymmetrySpecError, match="output must be"):
        CanonicalWrapper(mlp(0, 2), O2, output="logits")  # type: ignore[arg-type]
    angles = mirror_spec_dict()
    angles["action"] = {"joint_effort": "angle_shift"}
    with pytest.raises(SymmetrySpecError, match="cannot average angle_shift"):
        CanonicalWrapper(mlp(0, 2), SymmetrySpec.model_validate(angles).bind(OBS, ACT), output="action")
