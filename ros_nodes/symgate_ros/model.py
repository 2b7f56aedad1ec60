"""A certified model folder as the robot loads it: signature, contract, hashes, gate certificate, ONNX Runtime session.

This module is the robot side of ``symgate export`` and ``symgate gate``: it reads ``model.sig``,
``contract.json``, ``policy.onnx``, ``certificate.json`` and ``gate_report.json`` with nothing but
the standard library, numpy, ``cryptography`` and onnxruntime (no torch, no symgate), and
re-checks every binding the gate certified:

- ``model.sig`` (OpenSSF model signing, ``symgate_ros.signature``) is signed by one of the
  trusted keys and every signed file is unchanged; the ONNX file, the contract, the certificate
  and the gate report (which holds the resolved gate config) are among the signed files;
- ``sha256(policy.onnx)`` equals the contract's ``onnx_sha256``;
- the certificate's id is the sha256 of its other fields, its verdict is ``pass``, and it names
  this ONNX file's sha256, this contract's hash (sha256 of the contract's canonical JSON, sorted
  keys), this report's sha256 and the hash of the gate config inside the report, whose verdict
  is ``pass`` too.

Without a valid signature from a trusted key a model is refused; ``allow_uncertified`` loads it
anyway (development only: the node logs it and reports it on ``/diagnostics``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from symgate_ros.signature import SignatureError, TrustedKey, verify_folder

CONTRACT_FILE = "contract.json"
ONNX_FILE = "policy.onnx"
CERTIFICATE_FILE = "certificate.json"
REPORT_FILE = "gate_report.json"
#: The files the node reads or relies on: each must be signed.
SIGNED_FILES = (ONNX_FILE, CONTRACT_FILE, CERTIFICATE_FILE, REPORT_FILE)
CUDA_PROVIDER = "CUDAExecutionProvider"


class ModelError(Exception):
    """A model folder that must not be served; the message names the file and the problem."""


def sha256_json(data: Any) -> str:
    """Hex sha256 of a value's canonical JSON form (sorted keys), as symgate hashes contracts."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable: {error}") from error
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class Certification:
    """A verified certificate: its id and the trusted key that signed the folder."""

    certificate_id: str
    signer: TrustedKey


def verify_certificate(
    model_dir: Path, contract: dict[str, Any], onnx_sha256: str, trusted: Mapping[str, TrustedKey]
) -> Certification:
    """Check ``model.sig`` and ``certificate.json`` against the trusted keys and the files beside them.

    Raises:
        ModelError: Not signed, signed by an untrusted key, a forged signature, a signed file
            changed; or a certificate that is missing, edited, failed, or issued for another ONNX
            file, contract, report or gate config.
    """
    try:
        signed = verify_folder(model_dir, trusted, SIGNED_FILES)
    except SignatureError as error:
        raise ModelError(str(error)) from error
    path = model_dir / CERTIFICATE_FILE
    certificate = _read_json(path)
    bindings = {key: value for key, value in certificate.items() if key != "certificate_id"}
    if certificate.get("certificate_id") != sha256_json(bindings):
        raise ModelError(f"{path}: certificate_id does not match its contents: the certificate was edited")
    if certificate.get("verdict") != "pass":
        raise ModelError(f"{path}: verdict is {certificate.get('verdict')!r}, not 'pass'")
    if certificate.get("onnx_sha256") != onnx_sha256:
        raise ModelError(f"{path}: issued for ONNX sha256 {certificate.get('onnx_sha256')}, not {onnx_sha256}")
    if certificate.get("contract_sha256") != sha256_json(contract):
        raise ModelError(f"{path}: issued for another contract (contract sha256 differs)")
    if certificate.get("report_sha256") != signed.digests[REPORT_FILE]:
        raise ModelError(f"{path}: issued for another gate report ({REPORT_FILE} sha256 differs)")
    report = _read_json(model_dir / REPORT_FILE)
    if report.get("verdict") != "pass" or certificate.get("gate_config_sha256") != sha256_json(
        report.get("gate_config")
    ):
        raise ModelError(f"{model_dir / REPORT_FILE}: not a passed gate with the certificate's gate config")
    return Certification(str(certificate["certificate_id"]), signed.key)


def execution_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in (CUDA_PROVIDER, "CPUExecutionProvider") if p in available]


#: The contract format this node reads: one ``observation`` graph input (symgate export since 2026-12).
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class ObservationSource:
    """Where one component of the graph's observation input comes from.

    Attributes:
        group: The signal group (``joint_position``, ``joint_velocity``, ``goal_position``, ...).
        joint: The component's joint, as an index into the contract's ``joint_names``; -1 for a goal axis.
        axis: The goal axis (``x``, ``y``, ``z``); empty for a joint component.
    """

    group: str
    joint: int
    axis: str


class PolicyModel:
    """A verified model folder with its ONNX Runtime session; ``act`` maps raw signals to joint torques.

    Args:
        model_dir: Folder with ``policy.onnx``, ``contract.json`` and (unless ``allow_uncertified``)
            ``certificate.json``, ``gate_report.json`` and ``model.sig``.
        trusted: The keys whose signature is accepted, by key id (``signature.load_trusted_keys``).
        allow_uncertified: Serve a model that has no valid signed gate certificate (development
            only); ``uncertified_reason`` then says why it is not certified.

    Raises:
        ModelError: Any file missing, unreadable or not matching its hash or certificate, or a
            contract this node cannot serve.
    """

    def __init__(
        self, model_dir: Path, *, trusted: Mapping[str, TrustedKey] | None = None, allow_uncertified: bool = False
    ) -> None:
        import onnxruntime as ort

        self.directory = model_dir
        self.contract = _read_json(model_dir / CONTRACT_FILE)
        onnx_path = model_dir / ONNX_FILE
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path}: missing")
        onnx_bytes = onnx_path.read_bytes()  # hashed and loaded from the same bytes: no swap in between
        self.onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
        if self.onnx_sha256 != self.contract.get("onnx_sha256"):
            raise ModelError(
                f"{onnx_path}: sha256 {self.onnx_sha256} does not match the contract's "
                f"{self.contract.get('onnx_sha256')}: the file was changed"
            )
        self.certification: Certification | None = None
        self.uncertified_reason = ""
        try:
            self.certification = verify_certificate(model_dir, self.contract, self.onnx_sha256, trusted or {})
        except ModelError as error:
            if not allow_uncertified:
                raise
            self.uncertified_reason = str(error)
        self.certificate_id = self.certification.certificate_id if self.certification else None
        try:
            self.joint_names = tuple(str(j) for j in self.contract["joint_names"])
            self.control_hz = float(self.contract["control_hz"])
            self.action_low = np.asarray(self.contract["action_low"], dtype=np.float64)
            self.action_high = np.asarray(self.contract["action_high"], dtype=np.float64)
            table = self.contract.get("discrete_action_torques")
            self.discrete_torques = None if table is None else np.asarray(table, dtype=np.float64)
            version = self.contract["schema_version"]
            if version != SCHEMA_VERSION:
                raise ModelError(
                    f"{model_dir / CONTRACT_FILE}: schema_version {version}, this node reads {SCHEMA_VERSION} "
                    "(one observation input): export the model again with this symgate"
                )
            (graph_input,) = self.contract["inputs"]
            self.input_name = str(graph_input["name"])
            self.observation = tuple(self._source(str(name)) for name in graph_input["components"])
            self.output = str(self.contract["outputs"][0]["name"])
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise ModelError(f"{model_dir / CONTRACT_FILE}: not a symgate contract: {error!r}") from error
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(onnx_bytes, options, providers=execution_providers())
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise ModelError(f"{onnx_path}: ONNX Runtime cannot load it: {error}") from error
        self.provider = self.session.get_providers()[0]
        actual = [(i.name, i.shape[1:]) for i in self.session.get_inputs()]
        if actual != [(self.input_name, [len(self.observation)])]:
            raise ModelError(
                f"{onnx_path}: graph inputs {actual} differ from the contract's "
                f"[({self.input_name!r}, [{len(self.observation)}])]"
            )

    def _source(self, name: str) -> ObservationSource:
        """The source of the observation component ``group.component`` (a contract joint, or a goal axis)."""
        group, component = name.split(".", 1)
        if component in self.joint_names:
            return ObservationSource(group, self.joint_names.index(component), "")
        return ObservationSource(group, -1, component)

    def act(self, observation: NDArray[np.float32]) -> NDArray[np.float64]:
        """One ``(1, D)`` float32 observation (contract order) → joint torques in contract joint order (N·m).

        The result may hold NaN/inf if the graph produced them: the caller decides what is safe.
        """
        (output,) = self.session.run([self.output], {self.input_name: observation})
        if self.discrete_torques is not None:
            index = int(output[0])
            if not 0 <= index < len(self.discrete_torques):
                return np.full(len(self.joint_names), np.nan)
            torque: NDArray[np.float64] = self.discrete_torques[index].copy()
            return torque
        return np.asarray(output[0], dtype=np.float64)

    def compatible_with(self, other: PolicyModel) -> list[str]:
        """Why ``other`` cannot replace this model on the robot (joints, rate, observation, limits); [] if it can."""
        problems = []
        if other.joint_names != self.joint_names:
            problems.append(f"joint_names {list(other.joint_names)} != {list(self.joint_names)}")
        if other.control_hz != self.control_hz:
            problems.append(f"control_hz {other.control_hz:g} != {self.control_hz:g}")
        if other.observation != self.observation:
            problems.append("observation layouts differ")
        if not (
            np.array_equal(other.action_low, self.action_low) and np.array_equal(other.action_high, self.action_high)
        ):
            problems.append("action limits differ")
        return problems


def _urdf_path(profile: dict[str, Any], profile_path: Path) -> Path:
    """The profile's URDF: ``urdf.path`` (relative to the profile's folder) or a file of ``pybullet_data``.

    ``pybullet_data`` is located without importing it (nor pybullet): a robot that has no pybullet
    installed needs ``urdf.path``.
    """
    import importlib.util

    source = profile.get("urdf") or {}
    if not isinstance(source, dict):
        raise ModelError(f"{profile_path}: urdf: expected a mapping with path or pybullet_data")
    if source.get("path"):
        path = Path(str(source["path"]))
        return path if path.is_absolute() else profile_path.parent / path
    if source.get("pybullet_data"):
        spec = importlib.util.find_spec("pybullet_data")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"{profile_path}: urdf.pybullet_data: pybullet_data is not installed here; give urdf.path instead"
            )
        return Path(next(iter(spec.submodule_search_locations))) / str(source["pybullet_data"])
    raise ModelError(f"{profile_path}: urdf: give path or pybullet_data")


def urdf_joint_limits(urdf: Path) -> dict[str, dict[str, float]]:
    """``{joint: {lower, upper, velocity, effort}}`` of every movable joint of a URDF (missing bounds: ±inf).

    Raises:
        ModelError: The URDF is missing or not XML.
    """
    import math
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(urdf).getroot()
    except (OSError, ET.ParseError) as error:
        raise ModelError(f"{urdf}: cannot read the URDF: {error}") from error
    limits = {}
    for joint in root.iter("joint"):
        kind = joint.get("type")
        if kind not in ("revolute", "continuous", "prismatic"):
            continue
        element = joint.find("limit")
        attributes = dict(element.attrib) if element is not None else {}
        bounded = kind != "continuous"
        limit = {"lower": -math.inf, "upper": math.inf, "velocity": math.inf, "effort": math.inf}
        for key in limit:
            if key in attributes and (bounded or key in ("velocity", "effort")):
                try:
                    limit[key] = float(attributes[key])
                except ValueError as error:
                    raise ModelError(f"{urdf}: joint {joint.get('name')!r}: limit {key}: {error}") from error
        limits[str(joint.get("name"))] = limit
    return limits


def robot_mismatches(contract: dict[str, Any], profile_path: Path) -> list[str]:
    """Why a contract cannot drive the robot a profile describes; empty when it can.

    Reads the robot profile (``deploy/robots/<name>/robot.yaml``) with plain YAML and its URDF with
    the standard library's XML parser, as the robot has them, and compares the robot's name, its
    controlled joints and their order, the action interface, the control rate and the action
    limits: each joint's limit is the profile's override or else the URDF's, and the contract's
    limits must lie within it (torques within ±effort, velocity targets within ±velocity, position
    targets within [lower, upper]).

    Raises:
        ModelError: The profile or its URDF is missing, unreadable or not a mapping.
    """
    import yaml

    try:
        profile = yaml.safe_load(profile_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ModelError(f"{profile_path}: cannot read the robot profile: {error}") from error
    if not isinstance(profile, dict):
        raise ModelError(f"{profile_path}: a robot profile is a mapping")
    problems = []
    name = profile.get("name")
    trained_for = contract.get("robot") or "reacher"  # contracts without a robot are the built-in reacher's
    if Path(str(trained_for)).stem != name and Path(str(trained_for)).parent.name != name:
        problems.append(f"robot: contract {trained_for!r}, this robot {name!r}")
    joints = [str(j) for j in profile.get("joints", [])]
    if list(contract.get("joint_names", [])) != joints:
        problems.append(f"joint_names: contract {list(contract.get('joint_names', []))}, this robot {joints}")
    action = profile.get("action", {}) or {}
    interface = action.get("interface")
    if contract.get("action_interface", "effort") != interface:
        problems.append(f"action_interface: contract {contract.get('action_interface', 'effort')}, robot {interface}")
    if float(contract.get("control_hz", 0.0)) != float(profile.get("control_hz", 0.0)):
        problems.append(f"control_hz: contract {contract.get('control_hz')} Hz, robot {profile.get('control_hz')} Hz")
    urdf_path = _urdf_path(profile, profile_path)
    urdf = urdf_joint_limits(urdf_path)
    low, high = list(contract.get("action_low", [])), list(contract.get("action_high", []))
    overrides = action.get("limits") or {}
    for index, joint in enumerate(joints):
        if joint not in urdf:
            problems.append(f"joint {joint}: not a movable joint of {urdf_path.name}")
            continue
        limit = {**urdf[joint], **{k: float(v) for k, v in (overrides.get(joint) or {}).items() if v is not None}}
        if interface == "position":
            bounds = (limit["lower"], limit["upper"])
        elif interface in ("effort", "velocity"):
            bounds = (-limit[str(interface)], limit[str(interface)])
        else:
            continue  # the interface mismatch is already named
        for side, values, bound in (("lower", low, bounds[0]), ("upper", high, bounds[1])):
            if index >= len(values):
                continue
            value = float(values[index])
            if (value < bound - 1e-9) if side == "lower" else (value > bound + 1e-9):
                problems.append(
                    f"action limit of {joint}: contract {side} {value:g} lies outside this robot's "
                    f"[{bounds[0]:g}, {bounds[1]:g}]"
                )
    return problems
