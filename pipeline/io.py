"""File helpers shared by every stage: atomic writes, YAML configs with clear errors, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class UserInputError(ValueError):
    """Bad input from the user (a file, a dataset, a run folder); the message says which and why.

    The command line reports these as one line and exit code 2; anything else is a bug and keeps its traceback.
    """


class ConfigError(UserInputError):
    """A config file is missing, unparsable or invalid; the message names the file and the field."""


def load_config(path: Path, model: type[ModelT]) -> ModelT:
    """Load a YAML file into a pydantic model.

    Args:
        path: The YAML file.
        model: The pydantic model class to validate against.

    Returns:
        The validated model.

    Raises:
        ConfigError: Naming the file, and for invalid values each offending field and the problem.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {model.__name__} fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors()
        )
        raise ConfigError(f"{path}: invalid {model.__name__}: {problems}") from error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place only if the block succeeds.

    Args:
        final: Where the directory should end up.
        overwrite: Replace an existing ``final``; otherwise an existing one is an error.

    Yields:
        The temporary directory to fill (same parent as ``final``, so the rename is atomic).

    Raises:
        FileExistsError: If ``final`` exists and ``overwrite`` is false (checked before any work).
    """
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: already exists; refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, indented and with sorted keys so that files diff well."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_json(data: Any) -> str:
    """Hex sha256 of a value's canonical JSON form (sorted keys): the hash of a config or contract."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
