"""Signing certified model folders with OpenSSF model signing, and the gate's key pair.

The gate signs a passed model folder with ``model-signing`` (OpenSSF model signing, the format
made for ML artefacts) and its elliptic-key signer: ``model.sig`` is a Sigstore bundle whose DSSE
envelope carries an in-toto statement listing the sha256 of every file of the folder (the ONNX
file, the contract, the certificate, the gate report with the resolved gate config in it, and the
report's markdown and plots), signed with ECDSA P-256. Keys are local PEM files: signing works
offline, with no Sigstore service. The robot verifies the same bundle with only ``cryptography``
(``symgate_ros.signature``); this module verifies it with model-signing itself.

``symgate keys init`` writes the key pair: the private key PKCS#8 PEM, created with mode 0600
(never logged, never overwritten), and the public key next to it, which goes into the robots'
``trusted_keys``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.io import UserInputError

#: The signature file in a model folder (model-signing's usual name; ``symgate_ros.signature`` reads it).
SIGNATURE_FILE = "model.sig"
#: Environment variable naming the gate's private key (CI), the default of ``symgate gate --signing-key``.
SIGNING_KEY_ENV = "SYMGATE_SIGNING_KEY"
PRIVATE_KEY_FILE = "symgate-gate.key"
PUBLIC_KEY_FILE = "symgate-gate.pub"


class SigningError(UserInputError):
    """A key that cannot be created or used, or a model folder whose signature does not verify."""


def init_keys(directory: Path) -> tuple[Path, Path]:
    """Create a P-256 key pair in ``directory``: ``symgate-gate.key`` (mode 0600) and ``symgate-gate.pub``.

    The private key is written to a file created with mode 0600 (whatever the umask), then
    renamed into place, so no other user can ever read it. An existing key is never overwritten.

    Returns:
        The private and public key paths.

    Raises:
        SigningError: Either file exists already.
    """
    private, public = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    for path in (private, public):
        if path.exists():
            raise SigningError(f"{path}: exists; refusing to overwrite a key (move it away to rotate)")
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_new(private, pem, 0o600)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(public, public_pem, 0o644)
    return private, public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file with ``mode`` from its creation on (temp file + rename)."""
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        Path(temp).chmod(mode)
        os.link(temp, path)  # fails if ``path`` appeared meanwhile: never overwrites a key
    finally:
        Path(temp).unlink()


def check_private_key(path: Path) -> None:
    """Refuse a private key that is missing or readable by other users (like ssh does).

    Raises:
        SigningError: Missing, or its mode grants group or other users any access.
    """
    if not path.is_file():
        raise SigningError(f"{path}: signing key missing (symgate keys init creates one)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SigningError(f"{path}: private key has mode {mode:04o}, readable by others: chmod 600 it")


def sign_model(model_dir: Path, private_key: Path) -> Path:
    """Sign every file of ``model_dir`` into ``model_dir/model.sig`` with model-signing's elliptic-key signer.

    The signature is written beside the folder first and renamed into it, so a folder never holds
    a half-written signature.

    Raises:
        SigningError: The key is missing, readable by others, or not a P-256/384/521 private key.
    """
    import model_signing

    check_private_key(private_key)
    target = model_dir / SIGNATURE_FILE
    descriptor, temp = tempfile.mkstemp(dir=model_dir.parent, prefix=f".{model_dir.name}.", suffix=".sig")
    os.close(descriptor)
    try:
        config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
        config.set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE]))
        config.sign(model_dir, temp)
        Path(temp).chmod(0o644)  # public, like the files it signs (mkstemp made it 0600)
        Path(temp).replace(target)
    except ValueError as error:  # model-signing and cryptography raise ValueError for unusable keys
        raise SigningError(f"{private_key}: cannot sign with it: {error}") from error
    finally:
        Path(temp).unlink(missing_ok=True)
    return target


def verify_model_signature(model_dir: Path, trusted_keys: Sequence[Path]) -> Path:
    """Verify ``model_dir/model.sig`` with model-signing's own verifier; returns the public key that signed it.

    Every signed file must be present and unchanged; files that were not signed are ignored
    (``set_ignore_unsigned_files(True)``), exactly as the robot's verifier does.

    Raises:
        SigningError: Not signed, no trusted key verifies the signature, or a signed file changed.
    """
    import model_signing

    signature = model_dir / SIGNATURE_FILE
    if not signature.is_file():
        raise SigningError(f"{signature}: missing: the model folder is not signed (symgate gate --signing-key)")
    if not trusted_keys:
        raise SigningError(f"{signature}: no trusted public keys given: no signature can be accepted")
    failures = []
    for key in trusted_keys:
        try:
            config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key)
            config.set_ignore_unsigned_files(True)
            config.verify(model_dir, signature)
            return key
        except Exception as error:  # model-signing raises ValueError, InvalidSignature, OSError, ...
            failures.append(f"{key}: {type(error).__name__}: {error}")
    raise SigningError(f"{signature}: does not verify with any trusted key: {'; '.join(failures)}")
