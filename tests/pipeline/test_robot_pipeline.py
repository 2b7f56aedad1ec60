

@pytest.fixture(scope="module")
def iiwa_model(
    iiwa_fleet: tuple[Path, FleetManifest], datasets_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """fleet → ingest → canonical IQL → ONNX, CI size."""
    out, _ = iiwa_fleet
    ingest([out], config_for_robot("kuka_iiwa"), "symgate/iiwa-model-v0", workers=1, overwrite=True)
    config = TrainConfig.model_validate(
        {
            "robot": "kuka_iiwa",
            "features": "reach",
            "steps": 60,
            "batch_size": 64,
            "hidden": [64, 64],
            "log_every": 30,
            "checkpoint_every": 60,
            "metric_states": 128,
            "augmentation": {"strategy": "canonical"},
        }
    )
    run = tmp_path_factory.mktemp("iiwa-run") / "run"
    train(config, "symgate/iiwa-model-v0", run)
    model = run.parent / "model"
    export_model(run, model)
    return model


def test_the_iiwa_policy_exports_with_a_contract_naming_the_profile(iiwa_model: Path) -> None:
    contract = load_contract(iiwa_model)
    assert contract.robot == "kuka_iiwa"
    assert contract.action_interface == "velocity"
    assert contract.joint_names == tuple(f"lbr_iiwa_joint_{i}" for i in range(1, 8))
    assert contract.control_hz == 20.0
    assert contract.outputs[0].name == "joint_velocity_target"
    assert [spec.name for spec in contract.inputs] == ["joint_position", "joint_velocity", "goal_position"]
    assert contract.symmetry_spec["observation"]["joint_position"][0]["components"] == ["lbr_iiwa_joint_1"]
    assert contract.equivariance is not None and contract.equivariance.mean_error < 1e-4  # canonical: by construction


GATE_CI = {
    "suites": [
        {"name": "train", "contexts": "train", "episodes_per_context": 4},
        {"name": "test", "contexts": "test", "episodes_per_context": 1, "min_success": 0.0},
    ],
    "gap": None,
    "bootstrap_resamples": 100,
}


def test_the_gate_runs_the_iiwa_model_on_the_contract_s_robot(iiwa_model: Path, tmp_path: Path) -> None:
    outcome = run_gate(iiwa_model, GateConfig.model_validate(GATE_CI), workers=1, report_dir=tmp_path)
    assert outcome.report.reasons == ()
    assert [suite.name for suite in outcome.report.suites] == ["train", "test"]
    assert outcome.report.suites[1].episodes == 100
    assert outcome.report.gate_config["robot"] == "kuka_iiwa"


def test_the_gate_refuses_a_contract_for_another_robot(iiwa_model: Path, tmp_path: Path) -> None:
    config = GateConfig.model_validate({**GATE_CI, "robot": "reacher"})
    outcome = run_gate(iiwa_model, config, workers=1, report_dir=tmp_path)
    assert outcome.report.verdict == "fail"
    assert outcome.certificate is None
    reasons = "\n".join(outcome.report.reasons)
    for problem in (
        "robot: contract 'kuka_iiwa', env 'reacher'",
        "joint_names: contract",
        "action_interface: contract velocity, robot effort",
        "control_hz: contract 20 Hz, robot 50 Hz",
    ):
        assert problem in reasons
    assert outcome.report.episodes == ()  # nothing ran
