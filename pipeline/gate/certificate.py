"""The gate certificate: proof that this exact model passed this exact gate, signed by the gate's key.

``certificate.json`` is written into the model folder only when the gate passes. It binds the
ONNX file's sha256, the contract's hash, the gate config's hash and the report's hash; its id is
the hash of those bindings. Hashes need no secret, so anyone who can write the folder could
recompute them: what makes the certificate proof is ``model.sig``, the gate's OpenSSF
model-signing signature over every file of the folder (``pipeline.gate.signing``). The robot
node refuses a model that is not signed by one of its trusted keys, or whose certificate does
not match the files next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.export.contract import ONNX_FILE, Contract
from pipeline.gate.report import REPORT_JSON
from pipeline.gate.signing import SigningError, verify_model_signature
from pipeline.io import UserInputError, atomic_write_json, sha256_file, sha256_json

CERTIFICATE_FILE = "certificate.json"


class CertificateError(UserInputError):
    """A certificate is missing, invalid, or does not match the model it sits beside."""


class Certificate(BaseModel):
    """A passed gate, bound to the model, its contract, the gate config and the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(1, description="Version of this certificate format.")
    certificate_id: str = Field(description="sha256 of every other field: changes if anything bound changes.")
    verdict: Literal["pass"] = Field(description="Only passing models are certified.")
    onnx_sha256: str = Field(description="sha256 of policy.onnx.")
    contract_sha256: str = Field(description="Contract.sha256() of contract.json.")
    gate_config_sha256: str = Field(description="Hash of the resolved gate config.")
    report_sha256: str = Field(description="sha256 of gate_report.json as written.")
    symgate_version: str = Field(description="symgate version that ran the gate.")
    issued: str = Field(description="UTC time of issue, ISO 8601.")

    def expected_id(self) -> str:
        """The id these bindings must have."""
        return sha256_json(self.model_dump(mode="json", exclude={"certificate_id"}))


def issue_certificate(
    model_dir: Path, contract: Contract, gate_config_sha256: str, report: Path, symgate_version: str, issued: str
) -> Certificate:
    """Write ``certificate.json`` into ``model_dir`` (atomically) for a model that passed."""
    fields = {
        "verdict": "pass",
        "onnx_sha256": contract.onnx_sha256,
        "contract_sha256": contract.sha256(),
        "gate_config_sha256": gate_config_sha256,
        "report_sha256": sha256_file(report),
        "symgate_version": symgate_version,
        "issued": issued,
    }
    draft = Certificate.model_validate({**fields, "certificate_id": ""})
    certificate = draft.model_copy(update={"certificate_id": draft.expected_id()})
    atomic_write_json(model_dir / CERTIFICATE_FILE, certificate.model_dump(mode="json"))
    return certificate


def verify_certificate(model_dir: Path, contract: Contract, trusted_keys: Sequence[Path]) -> Certificate:
    """Check that ``model_dir`` holds a signed certificate for exactly this ONNX file, contract and report.

    The signature is checked first, with model-signing's own verifier, against ``trusted_keys``
    (PEM public keys): every signed file must be unchanged and the certificate, the ONNX file,
    the contract and the report must be among them.

    Raises:
        CertificateError: Not signed by a trusted key, a signed file changed, no certificate, an
            invalid or edited one, or one issued for other files.
    """
    try:
        verify_model_signature(model_dir, trusted_keys)
    except SigningError as error:
        raise CertificateError(str(error)) from error
    path = model_dir / CERTIFICATE_FILE
    if not path.is_file():
        raise CertificateError(f"{path}: missing; the model has not passed the gate")
    try:
        certificate = Certificate.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CertificateError(f"{path}: invalid certificate: {error}") from error
    if certificate.certificate_id != certificate.expected_id():
        raise CertificateError(f"{path}: certificate_id does not match its contents: the certificate was edited")
    onnx = sha256_file(model_dir / ONNX_FILE)
    if certificate.onnx_sha256 != onnx:
        raise CertificateError(f"{path}: issued for ONNX sha256 {certificate.onnx_sha256}, but {ONNX_FILE} is {onnx}")
    if certificate.contract_sha256 != contract.sha256():
        raise CertificateError(f"{path}: issued for another contract (contract sha256 differs)")
    report = model_dir / REPORT_JSON
    if not report.is_file() or certificate.report_sha256 != sha256_file(report):
        raise CertificateError(f"{path}: issued for another gate report ({report} missing or sha256 differs)")
    return certificate
