import json
from pathlib import Path

import onnx
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.export import CONTRACT_FILE, ONNX_FILE, load_contract
from pipeline.gate import (
    CERTIFICATE_FILE,
    REPORT_JSON,
    REPORT_MD,
    CertificateError,
    GateReport,
    run_gate,
    verify_certificate,
)
from pipeline.gate.report import POLAR_PNG, RETURNS_PNG
from pipeline.gate.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, SIGNATURE_FILE, SIGNING_KEY_ENV, sign_model
from pipeline.io import sha256_file
from sim import DISCRETE_ENV_ID
from tests.pipeline.gate.conftest import ModelCopier, small_gate
from tests.policies import replace_with_nan_graph, rewrite_onnx

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_symmetric_expert_passes_and_is_certified(
    expert_model: Path, model_copy: ModelCopier, gate_keys: tuple[Path, Path]
) -> None:
    model = model_copy(expert_model)
    outcome = run_gate(model, small_gate(), workers=1, signing_key=gate_keys[0])
    report = outcome.report
    assert report.verdict == "pass" and report.reasons == ()
    test = next(s for s in report.suites if s.name == "test")
    assert test.episodes == 20 and test.success.mean == 1.0 and test.non_finite_actions == 0
    assert report.success_gap is not None and report.success_gap.mean == 0.0
    assert all(check.passed for check in report.checks) and len(report.checks) == 3
    assert outcome.certificate is not None and outcome.signature == model / SIGNATURE_FILE
    assert verify_certificate(model, load_contract(model), [gate_keys[1]]) == outcome.certificate
    assert outcome.certificate.report_sha256 == sha256_file(model / REPORT_JSON)
    assert GateReport.model_validate_json((model / REPORT_JSON).read_text()) == report
    for plot in (POLAR_PNG, RETURNS_PNG):
        assert (model / plot).read_bytes().startswith(PNG_MAGIC)
    assert "PASS" in (model / REPORT_MD).read_text()


def test_policy_trained_without_symmetry_on_one_context_fails(
    unsymmetrised_model: Path, model_copy: ModelCopier
) -> None:
    model = model_copy(unsymmetrised_model)
    (model / CERTIFICATE_FILE).write_text("{}")  # a stale certificate must not survive a failed gate
    (model / SIGNATURE_FILE).write_text("{}")  # nor a stale signature
    report = run_gate(model, small_gate(), workers=1).report
    success = {s.name: s.success.mean for s in report.suites}
    assert report.verdict == "fail" and success["test"] < 0.9
    assert success["train"] > success["test"]  # it works where the data was
    assert any(reason.startswith("test: success = ") for reason in report.reasons)
    assert not (model / CERTIFICATE_FILE).exists() and not (model / SIGNATURE_FILE).exists()
    markdown = (model / REPORT_MD).read_text()
    assert "FAIL" in markdown and "Why it failed" in markdown and "not always solved" in markdown


def test_episodes_do_not_depend_on_the_worker_count(unsymmetrised_model: Path, tmp_path: Path) -> None:
    config = small_gate(episodes_per_task=3, env={"contexts": {"train_deg": [0.0], "test_count": 6}})
    one = run_gate(unsymmetrised_model, config, workers=1, report_dir=tmp_path / "one").report
    two = run_gate(unsymmetrised_model, config, workers=2, report_dir=tmp_path / "two").report
    assert len(one.episodes) == 16 and one.episodes == two.episodes


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"env": {"control_hz": 25, "contexts": {"train_deg": [0.0]}}}, "control_hz: contract 50 Hz, robot 25 Hz"),
        ({"env_id": DISCRETE_ENV_ID}, "the env takes discrete action indices, the model emits joint_effort"),
        ({"env": {"urdf": "OTHER"}}, "joint_names: contract"),
    ],
)
def test_contract_that_does_not_match_the_env_fails_with_the_reason(
    change: dict[str, object], reason: str, expert_model: Path, model_copy: ModelCopier, tmp_path: Path
) -> None:
    if change.get("env") == {"urdf": "OTHER"}:
        urdf = (Path(__file__).resolve().parents[3] / "sim/assets/reacher.urdf").read_text()
        other = tmp_path / "renamed.urdf"
        other.write_text(urdf.replace('name="elbow"', 'name="joint_2"'))
        change = {"env": {"urdf": str(other), "contexts": {"train_deg": [0.0]}}}
    model = model_copy(expert_model)
    report = run_gate(model, small_gate(**change), workers=1).report
    assert report.verdict == "fail" and report.episodes == () and report.suites == ()
    assert any(reason in r for r in report.reasons), report.reasons
    assert not (model / CERTIFICATE_FILE).exists()


def test_tampered_onnx_file_fails_with_the_reason(expert_model: Path, model_copy: ModelCopier) -> None:
    model = model_copy(expert_model)
    data = bytearray((model / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model / ONNX_FILE).write_bytes(bytes(data))
    report = run_gate(model, small_gate(), workers=1).report
    assert report.verdict == "fail" and "does not match the contract" in report.reasons[0]


def test_unloadable_onnx_with_a_matching_hash_fails_with_the_reason(
    expert_model: Path, model_copy: ModelCopier
) -> None:
    model = model_copy(expert_model)
    rewrite_onnx(model, (model / ONNX_FILE).read_bytes()[:200])
    report = run_gate(model, small_gate(), workers=1).report
    assert report.verdict == "fail" and "ONNX Runtime cannot load it" in report.reasons[0]


def test_nan_actions_during_rollout_fail_the_gate(expert_model: Path, model_copy: ModelCopier) -> None:
    """A graph with the right I/O whose torques are joint_velocity / 0: NaN at rest, inf when moving."""
    model = model_copy(expert_model)
    replace_with_nan_graph(model)
    report = run_gate(model, small_gate(), workers=1).report
    assert report.verdict == "fail"
    assert "test: 20 episodes produced NaN/inf actions" in report.reasons
    assert all(e.non_finite_action and e.steps == 0 and not e.success for e in report.episodes)


def test_certificate_binds_the_exact_files(
    expert_model: Path, model_copy: ModelCopier, gate_keys: tuple[Path, Path]
) -> None:
    model = model_copy(expert_model)
    run_gate(model, small_gate(), workers=1, signing_key=gate_keys[0])
    contract = load_contract(model)
    certificate = json.loads((model / CERTIFICATE_FILE).read_text())
    certificate["gate_config_sha256"] = "0" * 64
    (model / CERTIFICATE_FILE).write_text(json.dumps(certificate))
    with pytest.raises(CertificateError, match=r"Hash mismatch for .{0,4}certificate\.json"):
        verify_certificate(model, contract, [gate_keys[1]])
    sign_model(model, gate_keys[0])  # even signed by the gate's key, an edited certificate is refused
    with pytest.raises(CertificateError, match="certificate was edited"):
        verify_certificate(model, contract, [gate_keys[1]])
    (model / CERTIFICATE_FILE).unlink()
    with pytest.raises(CertificateError, match="does not verify"):
        verify_certificate(model, contract, [gate_keys[1]])
    (model / SIGNATURE_FILE).unlink()
    with pytest.raises(CertificateError, match="missing: the model folder is not signed"):
        verify_certificate(model, contract, [gate_keys[1]])


def test_certificate_of_another_model_is_refused(
    expert_model: Path, model_copy: ModelCopier, gate_keys: tuple[Path, Path]
) -> None:
    certified = model_copy(expert_model, "certified")
    run_gate(certified, small_gate(), workers=1, signing_key=gate_keys[0])
    other = model_copy(expert_model, "other")
    model = onnx.load(str(other / ONNX_FILE))
    model.doc_string = "rebuilt"
    rewrite_onnx(other, model.SerializeToString())
    for file in certified.iterdir():  # everything the gate wrote, certificate and signature included
        if file.name not in (ONNX_FILE, CONTRACT_FILE):
            (other / file.name).write_bytes(file.read_bytes())
    with pytest.raises(CertificateError, match=r"Hash mismatch for .{0,4}policy\.onnx"):
        verify_certificate(other, load_contract(other), [gate_keys[1]])
    sign_model(other, gate_keys[0])  # the bindings are checked too, not only the signature
    with pytest.raises(CertificateError, match="issued for ONNX sha256"):
        verify_certificate(other, load_contract(other), [gate_keys[1]])


def test_cli_exit_codes_follow_the_verdict(
    expert_model: Path, unsymmetrised_model: Path, model_copy: ModelCopier, tmp_path: Path
) -> None:
    config = tmp_path / "gate.yaml"
    config.write_text(yaml.safe_dump(small_gate().model_dump(mode="json")))
    runner = CliRunner()
    model = model_copy(expert_model)
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keys", "init", "--dir", str(keys)]).exit_code == 0
    key = str(keys / PRIVATE_KEY_FILE)
    gate = ["gate", str(model), "--config", str(config), "--workers", "1"]
    passed = runner.invoke(app, gate, env={SIGNING_KEY_ENV: key})
    assert passed.exit_code == 0, passed.output
    assert "PASS" in passed.output and "Certificate" in passed.output and "Signed" in passed.output
    verify_certificate(model, load_contract(model), [keys / PUBLIC_KEY_FILE])
    unsigned = runner.invoke(app, gate, env={SIGNING_KEY_ENV: None})
    assert unsigned.exit_code == 0 and "NOT signed" in unsigned.output and not (model / SIGNATURE_FILE).exists()
    failed = runner.invoke(
        app, ["gate", str(unsymmetrised_model), "--config", str(config), "--report-dir", str(tmp_path / "r")]
    )
    assert failed.exit_code == 1 and "FAIL" in failed.output and "fail: test: success" in failed.output
    assert (tmp_path / "r" / REPORT_MD).exists() and not (unsymmetrised_model / REPORT_MD).exists()
    missing = runner.invoke(app, ["gate", str(tmp_path / "nope"), "--config", str(config)])
    assert missing.exit_code == 2 and "no such model folder" in missing.output
