"""Stage 4, gate: run the exported ONNX policy in PyBullet on held-out contexts; certify it or say why not."""

from pipeline.gate.certificate import CERTIFICATE_FILE, Certificate, CertificateError, verify_certificate
from pipeline.gate.config import GapThreshold, GateConfig, GateSuite
from pipeline.gate.gate import GateOutcome, planned_episodes, run_gate
from pipeline.gate.recording import RECORDING_FILE
from pipeline.gate.render import RenderOptions
from pipeline.gate.report import REPORT_JSON, REPORT_MD, GateReport

__all__ = [
    "CERTIFICATE_FILE",
    "RECORDING_FILE",
    "REPORT_JSON",
    "REPORT_MD",
    "Certificate",
    "CertificateError",
    "GapThreshold",
    "GateConfig",
    "GateOutcome",
    "GateReport",
    "GateSuite",
    "RenderOptions",
    "planned_episodes",
    "run_gate",
    "verify_certificate",
]
