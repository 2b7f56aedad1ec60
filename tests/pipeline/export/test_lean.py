"""The lean float32 graph of link-point policies: same function as the float64 training modules, few nodes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import pipeline.export.export
from pipeline.export import ONNX_FILE
from pipeline.export.export import _random_states, export_run, load_policy
from pipeline.export.lean import LeanReachPolicy, _classes, _plan, lean_policy
from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, ingest
from pipeline.ingest.config import config_for_robot
from pipeline.train import TrainConfig, train

#: Node budget of the lean graph: 2 hidden layers, the iiwa's pivot product (3 nodes), the canonical frame (6).
MAX_NODES = 19


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, datasets_root: Path) -> dict[tuple[str, str], Path]:
    """A few IQL updates per robot profile and strategy, through fleet → ingest → train (CI size).

    Keys ``(robot, strategy)`` for ``reach`` features; ``("paper", strategy)`` is the reacher with the
    paper's ``reacher`` features (what ``make demo`` serves), trained without a profile as the demo is.
    """
    out: dict[tuple[str, str], Path] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
        for key in ("reacher", "paper", "kuka_iiwa"):
            robot = None if key == "paper" else key
            fleet = tmp_path_factory.mktemp(f"lean-{key}") / "fleet"
            record_fleet(FleetConfig(robot=robot, robots=1, episodes=2, recipe="mixed"), fleet, workers=1)
            dataset = f"symgate/lean-{key}-v0"
            ingest([fleet], config_for_robot(robot) if robot else IngestConfig(), dataset, workers=1, overwrite=True)
            for strategy in ("canonical", "dac-output"):
                profile = {"robot": robot, "features": "reach"} if robot else {"features": "reacher"}
                config = TrainConfig.model_validate(
                    {
                        **profile,
                        "steps": 10,
                        "batch_size": 32,
                        "hidden": [64, 64],
                        "log_every": 10,
                        "checkpoint_every": 10,
                        "metric_states": 32,
                        "augmentation": {"strategy": strategy},
                    }
                )
                run = tmp_path_factory.mktemp(f"lean-{key}-{strategy}") / "run"
                train(config, dataset, run)
                out[(key, strategy)] = run
    return out


CASES = list(itertools.product(("reacher", "paper", "kuka_iiwa"), ("canonical", "dac-output")))


@pytest.mark.parametrize(("robot", "strategy"), CASES)
def test_the_exported_graph_is_lean_float32_and_matches_the_float64_modules(
    runs: dict[tuple[str, str], Path], datasets_root: Path, tmp_path: Path, robot: str, strategy: str
) -> None:
    contract = export_run(runs[(robot, strategy)], tmp_path / "model")
    model = onnx.load(str(tmp_path / "model" / ONNX_FILE))
    ops = [node.op_type for node in model.graph.node]
    assert len(ops) <= MAX_NODES and "Atan" not in ops and "Cast" not in ops
    # One Sin for every joint-angle class, no MatMul; the 7-joint iiwa has one pivot (Gemm, Split, Mul).
    assert ops.count("Sin") == 1 and "MatMul" not in ops and ops.count("Split") == (robot == "kuka_iiwa")
    assert "Clip" not in ops  # both boxes are centred on 0: tanh keeps the actions inside
    doubles = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.DOUBLE]
    assert doubles == []
    assert contract.parity is not None and contract.parity.max_abs_diff <= 1e-5
    # Independently of the exporter's check: ORT against the float64 training modules on fresh random states.
    loaded = load_policy(runs[(robot, strategy)])
    states = _random_states(loaded.data, 2000, np.random.default_rng(7))
    session = ort.InferenceSession(str(tmp_path / "model" / ONNX_FILE), providers=["CPUExecutionProvider"])
    (onnx_actions,) = session.run(None, {"observation": states})
    with torch.no_grad():
        expected = loaded.policy(torch.as_tensor(states)).numpy()
    assert onnx_actions.dtype == np.float32
    np.testing.assert_allclose(onnx_actions, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("strategy", ["canonical", "dac-output"])
def test_the_iiwa_first_layer_reads_point_positions_not_every_angle_class(
    runs: dict[tuple[str, str], Path], datasets_root: Path, tmp_path: Path, strategy: str
) -> None:
    export_run(runs[("kuka_iiwa", strategy)], tmp_path / "model")
    graph = onnx.load(str(tmp_path / "model" / ONNX_FILE)).graph
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    gemms = [weights[node.input[1]] for node in graph.node if node.op_type == "Gemm"]
    angles, points, first = gemms[0], gemms[-4], gemms[-3]  # the angle classes, the point Gemm, the first layer
    classes = angles.shape[1]  # sin and cos of every class: 2 x 53 for the 7-joint chain split 3 + 4
    assert classes >= 100 and points.shape[0] >= classes
    # The first layer reads positions and pivot products (+ the observation and, canonical, r): far fewer
    # columns than the classes.
    width = angles.shape[0]  # the observation
    assert first.shape[1] == 64 and first.shape[0] - width - (strategy == "canonical") < classes / 2


@pytest.mark.parametrize("robot", ["reacher", "paper", "kuka_iiwa"])
def test_the_canonical_lean_graph_is_invariant_under_the_context_rotation(
    runs: dict[tuple[str, str], Path], datasets_root: Path, tmp_path: Path, robot: str
) -> None:
    contract = export_run(runs[(robot, "canonical")], tmp_path / "model")
    assert contract.equivariance is not None and contract.equivariance.max_error <= 1e-5
    loaded = load_policy(runs[(robot, "canonical")])
    lean = lean_policy(loaded.policy.actor, loaded.agent.symmetry, True, loaded.groups)
    assert isinstance(lean, LeanReachPolicy)
    states = _random_states(loaded.data, 500, np.random.default_rng(3))
    angle = np.random.default_rng(4).uniform(-math.pi, math.pi, len(states))
    moved = loaded.agent.symmetry.act_observation_np(states, angle).astype(np.float32)
    with torch.no_grad():
        action = lean(torch.as_tensor(states))
        action_moved = lean(torch.as_tensor(moved))
    # Velocity targets and torques are invariant under the rotation about base z.
    torch.testing.assert_close(action_moved, action, rtol=0, atol=1e-5)


def test_a_zero_goal_takes_bearing_zero_as_atan2_does(
    runs: dict[tuple[str, str], Path], datasets_root: Path, tmp_path: Path
) -> None:
    loaded = load_policy(runs[("kuka_iiwa", "canonical")])
    lean = lean_policy(loaded.policy.actor, loaded.agent.symmetry, True, loaded.groups)
    assert lean is not None
    states = _random_states(loaded.data, 16, np.random.default_rng(5))
    names = loaded.data.observation_names
    states[:, [names.index("goal_position.x"), names.index("goal_position.y")]] = 0.0
    with torch.no_grad():
        # φ = 0: the canonical frame is the identity, so the policy is the actor on the raw observation.
        expected = loaded.policy.actor.deterministic(torch.as_tensor(states, dtype=torch.float64)[None])[0]
        torch.testing.assert_close(lean(torch.as_tensor(states)), expected.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("joints", [1, 2, 3, 4])
def test_a_block_of_k_joints_has_3_to_the_k_minus_1_over_2_angle_classes(joints: int) -> None:
    classes = _classes(list(range(joints)), joints + 1, shifted=1 if joints > 1 else -1)
    assert len(classes) == len(set(classes)) == (3**joints - 1) // 2
    # One of each ±f: the shifted joint's sign is +1 where it takes part, else the first non-zero's.
    assert all((f[1] == 1) if f[1] else (next(x for x in f if x) == 1) for f in classes)


def test_a_point_gemm_is_added_where_it_saves_more_than_a_node_costs() -> None:
    # Paths of (step, joint column) per output point, root first, no pivot (depth = the longest path).
    planar = [[(0, 0)], [(0, 0), (1, 1)]]  # the reacher: 4 classes, 8 angular columns
    assert (plan := _plan(planar, 2, 2, -1)) is not None and not plan.point_gemm(256)
    chain = [[(k, k) for k in range(n)] for n in (3, 4, 5)]  # 5 joints: 121 classes, 242 columns
    assert (plan := _plan(chain, 5, 5, -1)) is not None and plan.angular_width == 242
    assert plan.point_gemm(256) and plan.cost(256) < plan.angular_width * 256
    assert (pivoted := _plan(chain, 2, 5, -1)) is not None and pivoted.pivoted and pivoted.point_gemm(8)


def test_policies_outside_the_lean_path_keep_the_traced_graph(
    runs: dict[tuple[str, str], Path], datasets_root: Path
) -> None:
    loaded = load_policy(runs[("reacher", "dac-output")])
    without_goal = [(name, index) for name, index in loaded.groups if name != "goal_position"]
    lean = lean_policy(loaded.policy.actor, loaded.agent.symmetry, False, without_goal)
    assert lean is None  # another input layout: the exporter traces the training modules instead


def test_the_lean_graph_reads_groups_by_index_whatever_their_listed_order(
    runs: dict[tuple[str, str], Path], datasets_root: Path
) -> None:
    loaded = load_policy(runs[("reacher", "dac-output")])
    listed, reversed_ = (
        lean_policy(loaded.policy.actor, loaded.agent.symmetry, False, groups)
        for groups in (loaded.groups, loaded.groups[::-1])
    )
    assert listed is not None and reversed_ is not None
    states = torch.as_tensor(_random_states(loaded.data, 200, np.random.default_rng(5)))
    with torch.no_grad():
        torch.testing.assert_close(reversed_(states), listed(states), rtol=0, atol=0)


def test_a_lean_graph_past_the_parity_tolerance_falls_back_to_the_float64_graph(
    runs: dict[tuple[str, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A lean graph 1e-3 off (its output bias shifted) fails parity: the traced float64 graph is exported instead."""

    def shifted(*args: object) -> LeanReachPolicy | None:
        lean = lean_policy(*args)  # type: ignore[arg-type]
        assert lean is not None
        with torch.no_grad():
            lean.layers[-1].add_(1e-3)
        return lean

    monkeypatch.setattr(pipeline.export.export, "lean_policy", shifted)
    with caplog.at_level("WARNING"):
        contract = export_run(runs[("kuka_iiwa", "canonical")], tmp_path / "model")
    assert "ONNX Runtime disagrees with torch" in caplog.text and "exporting the float64 graph instead" in caplog.text
    model = onnx.load(str(tmp_path / "model" / ONNX_FILE))
    assert any(t.data_type == onnx.TensorProto.DOUBLE for t in model.graph.initializer)
    assert contract.parity is not None and contract.parity.max_abs_diff <= 1e-5
