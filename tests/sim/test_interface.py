"""One interface for every simulated arm: the paper's reacher env and any profile's env provide it."""

import numpy as np
import pytest

from sim.robots.interface import SimulatedArm, simulated_arm
from sim.robots.profile import load_profile


@pytest.mark.parametrize("robot", [None, "reacher", "kuka_iiwa"])
def test_every_env_provides_the_interface_with_its_profile_s_facts(robot: str | None) -> None:
    env = simulated_arm(robot)
    try:
        assert isinstance(env, SimulatedArm)
        if robot is None:
            assert type(env).__name__ == "RotationalReacherEnv"  # the paper's env: 2-D goal
            expected: tuple[object, ...] = ("shoulder", "elbow"), "effort", 50, 250, "base_link"
        else:
            profile = load_profile(robot).profile
            expected = (
                profile.joints,
                profile.action.interface,
                profile.control_hz,
                profile.physics_hz,
                profile.base_link,
            )
        assert (env.joint_names, env.action_interface, env.control_hz, env.physics_hz, env.base_frame) == expected
        assert len(env.joint_continuous) == len(env.joint_names)
        assert [name.split(".", 1)[1] for name in env.action_names] == list(env.joint_names)
    finally:
        env.close()


def test_the_idle_command_holds_a_velocity_controlled_arm_still() -> None:
    env = simulated_arm("kuka_iiwa")
    try:
        env.reset(seed=0, options={"context": 0.4})
        before = env.joint_state().joint_position
        for _ in range(5):
            env.step(env.idle_command())
        np.testing.assert_allclose(env.joint_state().joint_position, before, atol=1e-3)
        assert env.contexts.angles("test").size == load_profile("kuka_iiwa").profile.contexts.test_count
    finally:
        env.close()


@pytest.mark.parametrize(("robot", "discrete"), [(None, False), (None, True), ("kuka_iiwa", False)])
def test_the_scene_and_the_applied_command_come_from_the_env_itself(robot: str | None, discrete: bool) -> None:
    env = simulated_arm(robot, discrete=discrete)
    try:
        env.reset(seed=0, options={"context": 0.4})
        scene = env.scene()
        links = [
            scene.bullet.getJointInfo(scene.body, i)[12].decode() for i in range(scene.bullet.getNumJoints(scene.body))
        ]
        hand = scene.bullet.getLinkState(
            scene.body, links.index(scene.end_effector_link), computeForwardKinematics=True
        )
        assert scene.urdf_path.is_file() and scene.joint_names == env.joint_names and scene.goal.shape == (3,)
        if robot is None:  # the paper's planar arm: its goal lies in the hand's plane
            np.testing.assert_allclose(scene.goal, [*env.goal_position, hand[4][2]])
        else:
            np.testing.assert_array_equal(scene.goal, env.goal_position)
        high = env.action_bounds[1]
        if discrete:  # an index applies its row of the torque table
            assert env.discrete_actions is not None
            np.testing.assert_array_equal(env.command(4), env.discrete_actions[4])
        else:  # a command beyond the limits is clipped to them
            np.testing.assert_array_equal(env.command(2.0 * high), high)
    finally:
        env.close()
