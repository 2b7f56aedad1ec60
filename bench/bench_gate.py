"""Gate episodes/s against raw PyBullet stepping of the same episodes, and scaling from 1 to 2 workers.

A small run is trained and exported through the real pipeline, then gated with the shipped config
(250 episodes: the data's context, 100 held-out rotations, the same with domain randomisation).
The reference replays exactly those episodes, as many control steps each as the gate took, with
the least any simulator loop must do: rebuild the world, then per control step set torques, step
the physics ``action_repeat`` times and read the joint states. The ratio is what the gate adds on
top (ONNX Runtime inference, observation assembly, forward kinematics, rewards, bookkeeping), per
worker. Repeats alternate; medians are reported.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import alternate, exported_model, median, write_result

from pipeline.gate import GateConfig, run_gate
from sim.bullet import connect_direct, pybullet
from sim.robot import DEFAULT_URDF

REPEATS = 3


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="symgate-bench-gate-"))
    try:
        model = exported_model(work)
        config = GateConfig()
        lengths: list[int] = []

        def gate(workers: int) -> float:
            report = run_gate(model, config, workers=workers, report_dir=work / f"report-{workers}").report
            lengths[:] = [episode.steps for episode in report.episodes]
            return len(report.episodes) / report.wall_time_s

        gate(1)  # warm-up, and the episode lengths the reference replays
        samples = alternate(
            REPEATS,
            gate_1_worker=lambda: gate(1),
            gate_2_workers=lambda: gate(2),
            raw_pybullet=lambda: raw_episodes_per_s(lengths, config.env.action_repeat, config.env.physics_hz),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, two, raw = (median(samples[k]) for k in ("gate_1_worker", "gate_2_workers", "raw_pybullet"))
    steps = sum(lengths)
    rows = [
        {
            "metric": f"gate episodes/s, 1 worker ({len(lengths)} episodes, {steps} control steps)",
            "symgate": one,
            "reference": raw,
            "reference_name": "raw PyBullet stepping of the same episodes (rebuild, torques, physics, joint read)",
            "ratio": one / raw,
            "target": ">= 0.5 per worker",
        },
        {
            "metric": "gate episodes/s, 2 workers vs 1",
            "symgate": two,
            "reference": one,
            "reference_name": "the gate with 1 worker",
            "ratio": two / one,
            "target": "> 1.3 on 2 cores",
        },
    ]
    write_result("gate", rows, samples)


def raw_episodes_per_s(lengths: list[int], action_repeat: int, physics_hz: int) -> float:
    client = connect_direct()
    torques = np.random.default_rng(0).uniform(-2.0, 2.0, size=(max(lengths), 2))
    start = time.perf_counter()
    for length in lengths:
        client.resetSimulation()
        client.setTimeStep(1.0 / physics_hz)
        body = client.loadURDF(str(DEFAULT_URDF), useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        joints = [0, 1]
        client.setJointMotorControlArray(body, joints, pybullet.VELOCITY_CONTROL, forces=[0.0, 0.0])
        for torque in torques[:length]:
            for _ in range(action_repeat):
                client.setJointMotorControlArray(body, joints, pybullet.TORQUE_CONTROL, forces=torque)
                client.stepSimulation()
            client.getJointStates(body, joints)
    elapsed = time.perf_counter() - start
    client.disconnect()
    return len(lengths) / elapsed


if __name__ == "__main__":
    main()
