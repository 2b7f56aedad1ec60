"""The robot's check of a model folder's OpenSSF model-signing signature, with nothing but ``cryptography``.

``symgate gate --signing-key`` signs a certified model folder with OpenSSF model signing
(``model-signing`` 1.x, its elliptic-key signer). That library pulls in sigstore (about 95 MB) and
pyOpenSSL, which a robot with apt ROS 2 does not have, so the robot checks the same standard
format itself with ``cryptography`` (apt ``python3-cryptography``). The signature file
``model.sig`` is a Sigstore bundle (v0.3, JSON) holding:

- ``verificationMaterial.publicKey.hint``: the signer's key id, the hex sha256 of its PEM
  SubjectPublicKeyInfo;
- a DSSE envelope whose payload (type ``application/vnd.in-toto+json``) is an in-toto Statement
  v1 with predicate ``https://model_signing/signature/v1.0``: one subject (the folder's name and
  the sha256 over every file digest, in order) and the predicate's ``resources``, one
  ``{name, algorithm: sha256, digest}`` per file of the folder, sorted by name;
- one ECDSA signature (P-256/SHA-256, P-384/SHA-384 or P-521/SHA-512) over the DSSE v1
  pre-authentication encoding ``"DSSEv1 <len(type)> <type> <len(payload)> " + payload``.

A folder is verified when the signer's key id names a trusted key, the signature verifies with
that key, the statement is well formed (its subject digest matches its resources), every signed
file is present and unchanged, and every file the node reads is among the signed ones. Files
that were not signed are ignored, as model-signing does with ``set_ignore_unsigned_files(True)``:
the node never reads them. The cross-tests in ``tests/ros_nodes/test_signature.py`` check that this
verifier and model-signing's own accept and refuse the same folders.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_FILE = "model.sig"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: Public key files picked from a ``trusted_keys`` directory.
KEY_SUFFIXES = (".pub", ".pem")
_CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


class SignatureError(Exception):
    """A model folder whose signature is missing, forged, from an untrusted key, or not matching its files."""


@dataclass(frozen=True)
class TrustedKey:
    """A public key the robot trusts, with the file it came from."""

    key_id: str
    path: Path
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class VerifiedFolder:
    """What a verified signature vouches for: the signer and the sha256 of every signed file."""

    key: TrustedKey
    digests: Mapping[str, str]


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key id model-signing records: hex sha256 of the PEM SubjectPublicKeyInfo."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def load_public_key(path: Path) -> TrustedKey:
    """Read one PEM public key (P-256, P-384 or P-521).

    Raises:
        SignatureError: Unreadable, not a PEM public key, or another kind of key.
    """
    try:
        public_key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise SignatureError(f"{path}: not a readable PEM public key: {error}") from error
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in _CURVE_HASHES:
        raise SignatureError(f"{path}: expected an elliptic-curve public key (P-256, P-384 or P-521)")
    return TrustedKey(key_id(public_key), path, public_key)


def load_trusted_keys(entries: Iterable[str | Path]) -> dict[str, TrustedKey]:
    """The trusted keys by key id, from public key files and directories of them (``*.pub``, ``*.pem``).

    Raises:
        SignatureError: An entry that does not exist, or a key file that cannot be read.
    """
    keys: dict[str, TrustedKey] = {}
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in KEY_SUFFIXES and p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise SignatureError(f"{path}: trusted key file or directory does not exist")
        for file in files:
            key = load_public_key(file)
            keys[key.key_id] = key
    return keys


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of an in-toto payload: the bytes the signature covers."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_folder(model_dir: Path, trusted: Mapping[str, TrustedKey], required: Sequence[str]) -> VerifiedFolder:
    """Verify ``model_dir/model.sig`` against the trusted keys and the files beside it.

    Args:
        model_dir: The model folder.
        trusted: Trusted keys by key id (``load_trusted_keys``).
        required: Files the caller reads: each must be signed.

    Raises:
        SignatureError: The reason, naming the file: not signed, an unknown or untrusted key, a
            signature that does not verify, a malformed statement, or a missing, changed or
            unsigned file.
    """
    path = model_dir / SIGNATURE_FILE
    if not path.is_file():
        raise SignatureError(f"{path}: missing: the model folder is not signed (symgate gate --signing-key)")
    if not trusted:
        raise SignatureError(f"{path}: no trusted keys configured (trusted_keys): no signature can be accepted")
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        envelope = bundle["dsseEnvelope"]
        hint = str(bundle["verificationMaterial"]["publicKey"]["hint"])
        payload = base64.b64decode(envelope["payload"], validate=True)
        (signature,) = envelope["signatures"]
        raw_signature = base64.b64decode(signature["sig"], validate=True)
        media_type, payload_type = bundle["mediaType"], envelope["payloadType"]
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as error:
        raise SignatureError(f"{path}: not a model-signing Sigstore bundle: {error!r}") from error
    if media_type != BUNDLE_MEDIA_TYPE or payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"{path}: unsupported bundle {media_type!r} with payload {payload_type!r}")
    key = trusted.get(hint)
    if key is None:
        raise SignatureError(
            f"{path}: signed by key {hint[:16] or '(none named)'}, which is not in trusted_keys "
            f"(trusted: {', '.join(k[:16] for k in sorted(trusted))})"
        )
    try:
        key.public_key.verify(raw_signature, pae(payload), ec.ECDSA(_CURVE_HASHES[key.public_key.curve.name]()))
    except InvalidSignature:
        raise SignatureError(
            f"{path}: the signature does not verify with trusted key {hint[:16]} ({key.path}): forged or corrupted"
        ) from None
    digests = _signed_digests(path, payload)
    for name, digest in digests.items():
        file = model_dir / name
        if file.is_symlink() or not file.is_file():
            raise SignatureError(f"{file}: signed, but missing (or a link) in the model folder")
        actual = sha256_file(file)
        if actual != digest:
            raise SignatureError(f"{file}: sha256 {actual} differs from the signed {digest}: the file was changed")
    unsigned = [name for name in required if name not in digests]
    if unsigned:
        raise SignatureError(f"{path}: does not sign {', '.join(unsigned)}")
    return VerifiedFolder(key, digests)


def _signed_digests(path: Path, payload: bytes) -> dict[str, str]:
    """The statement's ``{file name: sha256}`` after checking its types and its subject digest."""
    try:
        statement: dict[str, Any] = json.loads(payload)
        (subject,) = statement["subject"]
        predicate = statement["predicate"]
        serialization_ = predicate["serialization"]
        resources = [(str(r["name"]), str(r["algorithm"]), str(r["digest"])) for r in predicate["resources"]]
        root = hashlib.sha256(b"".join(bytes.fromhex(digest) for _, _, digest in resources)).hexdigest()
        types = (statement["_type"], statement["predicateType"], serialization_["method"], serialization_["hash_type"])
        subject_digest = subject["digest"]["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise SignatureError(f"{path}: not a model-signing statement: {error!r}") from error
    if types != (STATEMENT_TYPE, PREDICATE_TYPE, "files", "sha256") or any(a != "sha256" for _, a, _ in resources):
        raise SignatureError(f"{path}: unsupported statement {types}: expected sha256 file digests")
    if root != subject_digest:
        raise SignatureError(f"{path}: the statement's subject digest does not match its resources")
    names = [name for name, _, _ in resources]
    for name in names:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or not name:
            raise SignatureError(f"{path}: signed file name {name!r} leaves the model folder")
    return {name: digest for name, _, digest in resources}
