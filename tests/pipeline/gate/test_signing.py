"""The gate's key pair and model-signing signatures: keys only the owner reads, forgeries refused."""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.export import load_contract
from pipeline.gate import REPORT_JSON, CertificateError, run_gate, verify_certificate
from pipeline.gate.signing import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    SIGNATURE_FILE,
    SigningError,
    check_private_key,
    init_keys,
    sign_model,
    verify_model_signature,
)
from pipeline.io import UserInputError
from tests.pipeline.gate.conftest import ModelCopier, small_gate
from tests.policies import forge_certificate


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_private_key_is_never_readable_by_others(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        private, public = init_keys(tmp_path / "keys")
    finally:
        os.umask(previous)
    assert _mode(private) == 0o600 and _mode(public) == 0o644
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert sorted(p.name for p in private.parent.iterdir()) == [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE]  # no temp left
    with pytest.raises(SigningError, match="refusing to overwrite"):
        init_keys(tmp_path / "keys")


def test_keys_init_command_never_prints_the_private_key(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["keys", "init", "--dir", str(tmp_path)])
    assert done.exit_code == 0, done.output
    secret = (tmp_path / PRIVATE_KEY_FILE).read_text()
    body = "".join(secret.splitlines()[1:-1])
    assert "PRIVATE KEY" not in done.output and body[:20] not in done.output.replace("\n", "")
    assert runner.invoke(app, ["keys", "init", "--dir", str(tmp_path)]).exit_code == 2


def test_a_key_readable_by_others_is_refused_before_the_gate_runs(
    tmp_path: Path, gate_keys: tuple[Path, Path], expert_model: Path, model_copy: ModelCopier
) -> None:
    loose = tmp_path / "loose.key"
    shutil.copy(gate_keys[0], loose)
    loose.chmod(0o644)
    with pytest.raises(SigningError, match="mode 0644, readable by others"):
        check_private_key(loose)
    model = model_copy(expert_model)
    with pytest.raises(UserInputError, match="readable by others"):
        run_gate(model, small_gate(), workers=1, signing_key=loose)
    with pytest.raises(UserInputError, match="must hold its own report"):
        run_gate(model, small_gate(), workers=1, signing_key=gate_keys[0], report_dir=tmp_path / "elsewhere")
    assert not (model / REPORT_JSON).exists()  # refused before a single rollout


def test_forged_edited_and_untrusted_certificates_are_refused(
    expert_model: Path, unsymmetrised_model: Path, model_copy: ModelCopier, gate_keys: tuple[Path, Path]
) -> None:
    private, public = gate_keys
    certified = model_copy(expert_model, "certified")
    assert run_gate(certified, small_gate(), workers=1, signing_key=private).report.verdict == "pass"
    assert verify_certificate(certified, load_contract(certified), [public]).verdict == "pass"  # valid: accepted
    # Issue 15's experiment: a failed model with a recomputed, self-consistent certificate.
    failed = model_copy(unsymmetrised_model, "failed")
    assert run_gate(failed, small_gate(), workers=1, signing_key=private).report.verdict == "fail"
    forge_certificate(failed, certified)
    with pytest.raises(CertificateError, match=r"Hash mismatch for .{0,4}certificate\.json"):
        verify_certificate(failed, load_contract(failed), [public])
    # An edited gate report.
    edited = model_copy(certified, "edited")
    report = json.loads((edited / REPORT_JSON).read_text())
    report["suites"] = []
    (edited / REPORT_JSON).write_text(json.dumps(report))
    with pytest.raises(CertificateError, match=r"Hash mismatch for .{0,4}gate_report\.json"):
        verify_certificate(edited, load_contract(edited), [public])
    # A valid signature by a key the verifier does not trust.
    other_private, other_public = init_keys(certified.parent / "other-keys")
    resigned = model_copy(certified, "resigned")
    sign_model(resigned, other_private)
    assert verify_model_signature(resigned, [public, other_public]) == other_public
    with pytest.raises(CertificateError, match="Key mismatch"):
        verify_certificate(resigned, load_contract(resigned), [public])
    with pytest.raises(CertificateError, match="no trusted public keys"):
        verify_certificate(certified, load_contract(certified), [])
    signature = certified / SIGNATURE_FILE
    assert signature.stat().st_size < 4096 and _mode(signature) == 0o644  # detached, and readable by the node
