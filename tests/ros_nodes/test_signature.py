"""Signed model folders: the robot's verifier against model-signing's, and the node over real DDS.

Each case damages a copy of a certified, signed folder the way an attacker with write access to it
could; the robot's ``cryptography``-only verifier (``symgate_ros``) and the gate's model-signing
verifier (``pipeline.gate``) must accept and refuse exactly the same folders. The node refuses
forged and untrusted folders at configure and at hot swap, and clears the e-stop only while its
running model still verifies.
"""

import base64
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lifecycle_msgs.msg import State, Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Bool

from pipeline.export import load_contract
from pipeline.gate import REPORT_JSON, CertificateError, run_gate, verify_certificate
from pipeline.gate.signing import SIGNATURE_FILE as GATE_SIGNATURE_FILE
from pipeline.gate.signing import SigningError, init_keys, sign_model, verify_model_signature
from symgate_ros.model import CERTIFICATE_FILE, ONNX_FILE, ModelError, PolicyModel, sha256_json
from symgate_ros.signature import SIGNATURE_FILE, load_trusted_keys, sha256_file, verify_folder
from tests.policies import forge_certificate
from tests.ros_nodes.conftest import GATE, Harness, Models, Server


@pytest.fixture(scope="module")
def failed(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that really failed the gate (NaN actions), with a forged certificate."""
    folder = tmp_path_factory.mktemp("failed") / "model"
    shutil.copytree(models.nan_output, folder)
    outcome = run_gate(folder, GATE, workers=1, signing_key=models.signing_key)
    assert outcome.report.verdict == "fail" and not (folder / SIGNATURE_FILE).exists()
    forge_certificate(folder, models.certified)
    return folder


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return init_keys(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(scope="module")
def untrusted(models: Models, other_keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that passed the gate, validly signed by a key the robot does not trust."""
    folder = tmp_path_factory.mktemp("untrusted") / "model"
    shutil.copytree(models.certified_other, folder)
    sign_model(folder, other_keys[0])
    return folder


def _edit_json(name: str, key: str, value: object) -> Callable[[Path, Models], None]:
    def edit(folder: Path, models: Models) -> None:
        data = json.loads((folder / name).read_text())
        data[key] = value
        (folder / name).write_text(json.dumps(data))

    return edit


def _resign_statement(folder: Path, models: Models) -> None:
    """Edit the report, put its new digest into the signed statement (recomputing the subject), keep the signature."""
    _edit_json(REPORT_JSON, "verdict", "pass")(folder, models)
    bundle = json.loads((folder / SIGNATURE_FILE).read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    resources = statement["predicate"]["resources"]
    for resource in resources:
        resource["digest"] = sha256_file(folder / resource["name"])
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    statement["subject"][0]["digest"]["sha256"] = root
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / SIGNATURE_FILE).write_text(json.dumps(bundle))


def _flip_signature(folder: Path, models: Models) -> None:
    bundle = json.loads((folder / SIGNATURE_FILE).read_text())
    signature = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    signature[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    (folder / SIGNATURE_FILE).write_text(json.dumps(bundle))


# (name, damage, robot's reason); reason None: both must accept.
CASES: list[tuple[str, Callable[[Path, Models], None], str | None]] = [
    ("untouched", lambda folder, models: None, None),
    ("unsigned file added", lambda folder, models: (folder / "notes.txt").touch(), None),
    ("signature removed", lambda folder, models: (folder / SIGNATURE_FILE).unlink(), "model.sig: missing"),
    ("gate report edited", _edit_json(REPORT_JSON, "verdict", "fail"), "gate_report.json: sha256 .* differs"),
    ("certificate edited", _edit_json(CERTIFICATE_FILE, "issued", "2030"), "certificate.json: sha256 .* differs"),
    ("signed file deleted", lambda folder, models: (folder / "gate_report.md").unlink(), "gate_report.md: signed, but"),
    ("statement re-hashed", _resign_statement, "signature does not verify"),
    ("signature bytes flipped", _flip_signature, "signature does not verify"),
]


@pytest.mark.parametrize(("name", "damage", "reason"), CASES, ids=[c[0] for c in CASES])
def test_robot_verifier_agrees_with_model_signing(
    models: Models, tmp_path: Path, name: str, damage: Callable[[Path, Models], None], reason: str | None
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(models.certified, folder)
    damage(folder, models)
    trusted = load_trusted_keys([models.trusted_key])
    if reason is None:
        assert verify_folder(folder, trusted, [ONNX_FILE]).key.path == models.trusted_key
        assert verify_model_signature(folder, [models.trusted_key]) == models.trusted_key
        return
    with pytest.raises(ModelError, match=reason):
        PolicyModel(folder, trusted=trusted)
    with pytest.raises(SigningError):
        verify_model_signature(folder, [models.trusted_key])


def test_forged_certificate_of_a_failed_model_is_refused(models: Models, failed: Path) -> None:
    """The forged certificate is self-consistent (the old hash-only check accepted it); the signature refuses it."""
    certificate = json.loads((failed / CERTIFICATE_FILE).read_text())
    bindings = {key: value for key, value in certificate.items() if key != "certificate_id"}
    assert certificate["certificate_id"] == sha256_json(bindings)
    assert certificate["onnx_sha256"] == load_contract(failed).onnx_sha256
    trusted = load_trusted_keys([models.trusted_key])
    with pytest.raises(ModelError, match=r"certificate.json: sha256 .* differs from the signed"):
        PolicyModel(failed, trusted=trusted)
    with pytest.raises(CertificateError, match="does not verify with any trusted key"):
        verify_certificate(failed, load_contract(failed), [models.trusted_key])


def test_untrusted_key_and_rotation(models: Models, other_keys: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(models.certified, folder)
    other_private, other_public = other_keys
    sign_model(folder, other_private)  # a valid signature, by a key the robot does not trust
    with pytest.raises(ModelError, match="which is not in trusted_keys"):
        PolicyModel(folder, trusted=load_trusted_keys([models.trusted_key]))
    with pytest.raises(SigningError):
        verify_model_signature(folder, [models.trusted_key])
    # Rotation: trust both, then only the new key: the old key's folders are refused.
    both = load_trusted_keys([models.trusted_key, other_public.parent])
    assert PolicyModel(folder, trusted=both).certification is not None
    assert PolicyModel(models.certified, trusted=both).certification is not None
    with pytest.raises(ModelError, match="which is not in trusted_keys"):
        PolicyModel(models.certified, trusted=load_trusted_keys([other_public]))
    with pytest.raises(ModelError, match="no trusted keys configured"):
        PolicyModel(models.certified, trusted={})


def test_signature_file_names_agree() -> None:
    assert SIGNATURE_FILE == GATE_SIGNATURE_FILE


# ------------------------------------------------------------------------------------ the node over DDS
def set_trusted_keys(harness: Harness, keys: list[Path]) -> None:
    client = harness.create_client(SetParameters, f"/{harness.server}/set_parameters")
    value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=[str(k) for k in keys])
    result = harness.call(client, SetParameters.Request(parameters=[Parameter(name="trusted_keys", value=value)]))
    assert result.results[0].successful


def active(start_server: Callable[..., Server], model: Path) -> Server:
    server = start_server(model_dir=str(model))
    assert server.harness.transition(Transition.TRANSITION_CONFIGURE), "configure refused"
    assert server.harness.transition(Transition.TRANSITION_ACTIVATE), "activate refused"
    assert server.harness.wait_for(lambda: len(server.harness.commands) > 5)
    return server


@pytest.mark.parametrize("which", ["failed", "untrusted"])
def test_node_refuses_forged_and_untrusted_certificates_at_configure(
    which: str, start_server: Callable[..., Server], request: pytest.FixtureRequest
) -> None:
    server = start_server(model_dir=str(request.getfixturevalue(which)))
    assert not server.harness.transition(Transition.TRANSITION_CONFIGURE)
    assert server.harness.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert server.harness.commands == []


def test_node_refuses_forged_and_untrusted_certificates_at_hot_swap(
    start_server: Callable[..., Server], models: Models, failed: Path, untrusted: Path
) -> None:
    server = active(start_server, models.certified)
    harness = server.harness
    for folder, reason in ((failed, "certificate.json: sha256"), (untrusted, "which is not in trusted_keys")):
        harness.set_model_dir(folder)
        response = harness.swap()
        assert not response.success and reason in response.message, response.message
    harness.set_model_dir(models.certified_other)  # a signed, trusted, compatible model still swaps in
    assert harness.swap().success


def test_estop_reset_and_swap_need_a_verified_model_and_a_trusted_key(
    start_server: Callable[..., Server], models: Models, other_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    running = tmp_path / "running"
    shutil.copytree(models.certified, running)
    server = active(start_server, running)
    harness = server.harness
    harness.estop.publish(Bool(data=True))
    engaged = time.monotonic()
    assert harness.wait_for(lambda: any(c == [0.0, 0.0] for _, c in harness.commands_since(engaged)), timeout_s=2)
    safe_since = next(t for t, c in harness.commands_since(engaged) if c == [0.0, 0.0])
    report = (running / REPORT_JSON).read_bytes()
    _edit_json(REPORT_JSON, "verdict", "fail")(running, models)
    refused = harness.reset_estop()  # the running model's folder no longer verifies
    assert not refused.success and "gate_report.json: sha256" in refused.message, refused.message
    (running / REPORT_JSON).write_bytes(report)
    set_trusted_keys(harness, [other_keys[1]])  # rotation: the key that signed the running model is dropped
    refused = harness.reset_estop()
    assert not refused.success and "which is not in trusted_keys" in refused.message, refused.message
    harness.set_model_dir(models.certified_other)
    swapped = harness.swap()
    assert not swapped.success and "which is not in trusted_keys" in swapped.message, swapped.message
    time.sleep(0.1)
    held = harness.commands_since(safe_since)
    assert len(held) > 5 and all(c == [0.0, 0.0] for _, c in held)  # the e-stop held throughout
    set_trusted_keys(harness, [models.trusted_key])
    cleared = harness.reset_estop()
    assert cleared.success and "cleared" in cleared.message
