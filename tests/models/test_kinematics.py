"""Forward kinematics inside the network (float32), reach features, canonical invariance and DAC-Output on the iiwa."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.canonical import CanonicalWrapper
from models.features import ObservationEncoder, ReacherFeatures
from models.kinematics import ReachFeatures
from models.networks import GaussianTanhActor
from models.symmetry import GroupElement, SymmetrySpec
from pipeline.train.augment import Augmenter, actor_consistency
from pipeline.train.config import AugmentationConfig
from sim.bullet import connect_direct
from sim.robot import load_robot_description
from sim.robots.env import ArmReachEnv
from sim.robots.expert import ReachExpert
from sim.robots.profile import load_profile


def _observations(robot: str, count: int, seed: int = 0, contexts: tuple[float, float] | None = None) -> np.ndarray:
    env = ArmReachEnv(robot)
    expert = ReachExpert(env.robot, env.observation_names)
    rng = np.random.default_rng(seed)
    low, high = contexts or tuple(np.deg2rad(env.profile.contexts.sector_deg))
    rows: list[np.ndarray] = []
    while len(rows) < count:
        observation, _ = env.reset(seed=len(rows), options={"context": float(rng.uniform(low, high))})
        for _ in range(8):
            rows.append(observation)
            observation, *_ = env.step(expert(observation, rng))
    return np.array(rows[:count], dtype=np.float32)


@pytest.mark.parametrize("robot", ["reacher", "kuka_iiwa"])
def test_float32_link_points_match_pybullet_link_frames(robot: str) -> None:
    loaded = load_profile(robot)
    features = ReachFeatures.from_robot(loaded, loaded.observation_names)
    bc = connect_direct()
    body = bc.loadURDF(str(loaded.urdf_path), useFixedBase=True)
    joints = {bc.getJointInfo(body, i)[1].decode(): i for i in range(bc.getNumJoints(body))}
    links = {bc.getJointInfo(body, i)[12].decode(): i for i in range(bc.getNumJoints(body))}
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(20):
        q = np.array([rng.uniform(max(lim.lower, -3.0), min(lim.upper, 3.0)) for lim in loaded.limits])
        for name, value in zip(loaded.joint_names, q, strict=True):
            bc.resetJointState(body, joints[name], float(value))
        expected = np.array(
            [bc.getLinkState(body, links[link], computeForwardKinematics=True)[4] for link in features.points.links]
        )
        points = features.points(torch.as_tensor(q, dtype=torch.float32)).numpy()
        assert points.dtype == np.float32
        worst = max(worst, float(np.abs(points - expected).max()))
    bc.disconnect()
    assert worst < 1e-6


def test_reach_features_are_target_centred_and_rotate_with_the_context() -> None:
    robot = load_profile("kuka_iiwa")
    features = ReachFeatures.from_robot(robot, robot.observation_names)
    assert features.feature_names[:3] == tuple(f"lbr_iiwa_link_7_from_goal.{a}" for a in "xyz")
    # Link 2 sits on joint 1's axis at a fixed height and the goal height is fixed: its z feature would be constant.
    assert features.planar_links == ("lbr_iiwa_link_2",)
    assert features.out_features == 4 * 3 - 1 + 7
    observations = torch.as_tensor(_observations("kuka_iiwa", 32))
    bound = SymmetrySpec.model_validate(robot.symmetry_spec()).bind(robot.observation_names, robot.action_names)
    theta = torch.full((32,), 0.7)
    rotated = bound.act_observation(observations, GroupElement(theta, torch.zeros(32, dtype=torch.bool)))
    goal = observations[:, -3:].unsqueeze(1)
    goal_rotated = rotated[:, -3:].unsqueeze(1)
    plain = features.points(observations[:, :7]) - goal
    turned = features.points(rotated[:, :7]) - goal_rotated
    c, s = np.cos(0.7), np.sin(0.7)
    rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)
    torch.testing.assert_close(turned, plain @ rz.T, atol=2e-6, rtol=0)
    torch.testing.assert_close(features(rotated)[:, -7:], features(observations)[:, -7:])


def test_reach_features_of_the_reacher_profile_equal_the_reacher_features() -> None:
    robot = load_profile("reacher")
    generic = ReachFeatures.from_robot(robot, robot.observation_names)
    legacy = ReacherFeatures.from_robot(load_robot_description(), robot.observation_names)
    observations = torch.as_tensor(_observations("reacher", 64))
    renamed = {"upper_arm": "shoulder", "forearm": "elbow"}
    names = [
        n.replace(n.split("_from_goal")[0], renamed.get(n.split("_from_goal")[0], n.split("_from_goal")[0]))
        for n in generic.feature_names
    ]
    assert sorted(names) == sorted(legacy.feature_names)  # planar: no z features at all
    order = [names.index(name) for name in legacy.feature_names]
    torch.testing.assert_close(generic(observations)[:, order], legacy(observations), atol=1e-6, rtol=0)


def test_reach_features_export_to_onnx(tmp_path: Path) -> None:
    robot = load_profile("kuka_iiwa")
    features = ReachFeatures.from_robot(robot, robot.observation_names)
    observations = torch.as_tensor(_observations("kuka_iiwa", 16))
    path = tmp_path / "features.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        features,
        (observations,),
        str(path),
        input_names=["observation"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"observation": observations[:5].numpy()})
    np.testing.assert_allclose(exported, features(observations[:5]).numpy(), atol=1e-5)


def _actor(robot_name: str, observations: torch.Tensor) -> tuple[GaussianTanhActor, object]:
    robot = load_profile(robot_name)
    encoder = ObservationEncoder.from_features(ReachFeatures.from_robot(robot, robot.observation_names))
    encoder.fit(observations)
    low, high = robot.action_limits()
    generator = torch.Generator().manual_seed(0)
    actor = GaussianTanhActor(
        1, encoder, torch.as_tensor(low), torch.as_tensor(high), hidden=(64, 64), generators=[generator]
    )
    return actor, robot


def test_canonical_actor_is_rotation_invariant_on_the_iiwa() -> None:
    observations = torch.as_tensor(_observations("kuka_iiwa", 64))
    actor, robot = _actor("kuka_iiwa", observations)
    bound = SymmetrySpec.model_validate(robot.symmetry_spec()).bind(robot.observation_names, robot.action_names)  # type: ignore[attr-defined]
    wrapped = CanonicalWrapper(lambda o: actor(o)[0], bound, output="action")  # type: ignore[arg-type]
    theta = torch.as_tensor(np.random.default_rng(1).uniform(-np.pi, np.pi, size=64), dtype=torch.float32)
    rotated = bound.act_observation(observations, GroupElement(theta, torch.zeros(64, dtype=torch.bool)))
    with torch.no_grad():
        plain = wrapped(observations[None])
        turned = wrapped(rotated[None])
        raw_gap = (actor(rotated[None])[0] - actor(observations[None])[0]).abs().max()
    torch.testing.assert_close(turned, plain, atol=1e-4, rtol=0)  # velocity targets are invariant
    assert raw_gap > 1e-2  # the unwrapped network is not


def test_dac_output_equivariance_error_falls_on_the_iiwa() -> None:
    """Behaviour cloning on context-0 data: with λ·DAC-Output the error on unseen rotations falls far below BC alone."""
    train = torch.as_tensor(_observations("kuka_iiwa", 128, contexts=(0.0, 0.0)))
    env = ArmReachEnv("kuka_iiwa")
    expert = ReachExpert(env.robot, env.observation_names)
    rng = np.random.default_rng(0)
    targets = torch.as_tensor(np.array([expert(o, rng) for o in train.numpy()]), dtype=torch.float32)
    robot = env.robot
    bound = SymmetrySpec.model_validate(robot.symmetry_spec()).bind(robot.observation_names, robot.action_names)
    augmenter = Augmenter(AugmentationConfig(strategy="dac-output"), bound, discrete=False)
    no_mirror = torch.zeros(128, dtype=torch.bool)
    orbit = torch.cat(
        [bound.act_observation(train, GroupElement(torch.full((128,), a), no_mirror)) for a in (0.0, 1.0, -1.0)]
    )
    test = torch.as_tensor(_observations("kuka_iiwa", 128, seed=3, contexts=(-1.5, 1.5)))
    theta = torch.as_tensor(np.random.default_rng(2).uniform(-1.5, 1.5, size=128), dtype=torch.float32)
    rotated = bound.act_observation(test, GroupElement(theta, no_mirror))

    def trained(weight: float) -> tuple[float, float]:
        torch.manual_seed(0)
        actor, _ = _actor("kuka_iiwa", orbit)
        optimiser = torch.optim.Adam(actor.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)

        def error() -> float:
            with torch.no_grad():
                return float((actor(rotated[None])[0] - actor(test[None])[0]).square().mean())

        before = error()
        for _ in range(150):
            g = augmenter.sample([generator], 128, torch.device("cpu"))
            loss = (actor(train[None])[0] - targets[None]).square().mean()
            if weight:
                loss = loss + weight * actor_consistency(actor, augmenter, train[None], g).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return before, error()

    _, plain = trained(0.0)
    before, dac = trained(10.0)
    assert dac < before
    assert dac < 0.2 * plain
