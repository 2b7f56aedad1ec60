"""Control steps per second of the Rotational Reacher vs a bare PyBullet loop doing the same physics.

The reference is the least any Gymnasium wrapper must do: set torques, step the physics
``action_repeat`` times, read the joint states. The ratio is the cost of everything symgate adds
(clipping, forward kinematics, reward, observation, info). Repeats alternate between the two so
that machine noise hits both; medians are reported.
"""

from __future__ import annotations

import time

import numpy as np
from common import alternate, median, write_result

from sim.bullet import connect_direct, pybullet
from sim.reacher import RotationalReacherEnv
from sim.robot import DEFAULT_URDF

STEPS = 2000
REPEATS = 7


def symgate_env_steps_per_s() -> float:
    env = RotationalReacherEnv({"max_episode_steps": STEPS + 1})
    env.reset(seed=0, options={"context": 0.0})
    torques = np.random.default_rng(0).uniform(-2.0, 2.0, size=(STEPS, 2))
    start = time.perf_counter()
    for torque in torques:
        _, _, terminated, _, _ = env.step(torque)
        if terminated:
            env.reset(seed=0, options={"context": 0.0})
    elapsed = time.perf_counter() - start
    env.close()
    return STEPS / elapsed


def bare_pybullet_steps_per_s() -> float:
    client = connect_direct()
    client.setTimeStep(1.0 / 250)
    body = client.loadURDF(str(DEFAULT_URDF), useFixedBase=True)
    joints = [0, 1]
    client.setJointMotorControlArray(body, joints, pybullet.VELOCITY_CONTROL, forces=[0.0, 0.0])
    torques = np.random.default_rng(0).uniform(-2.0, 2.0, size=(STEPS, 2))
    start = time.perf_counter()
    for torque in torques:
        for _ in range(5):
            client.setJointMotorControlArray(body, joints, pybullet.TORQUE_CONTROL, forces=torque)
            client.stepSimulation()
        client.getJointStates(body, joints)
    elapsed = time.perf_counter() - start
    client.disconnect()
    return STEPS / elapsed


def main() -> None:
    samples = alternate(REPEATS, symgate=symgate_env_steps_per_s, reference=bare_pybullet_steps_per_s)
    ours, reference = median(samples["symgate"]), median(samples["reference"])
    row = {
        "metric": "env control steps/s (5 physics steps each), median",
        "symgate": ours,
        "reference": reference,
        "reference_name": "bare PyBullet loop: torques, 5 physics steps, joint-state read",
        "ratio": ours / reference,
        "target": ">= 0.5",
    }
    write_result("env_step", [row], samples)


if __name__ == "__main__":
    main()
