"""Reading symgate's Minari datasets with errors that name the dataset and the file.

Every stage that reads a dataset (train, symmetry check, experiments) opens it here, so that a
missing dataset, damaged metadata or a truncated ``main_data.hdf5`` is one clear
:class:`DatasetError`, raised before the stage writes anything, instead of a traceback from h5py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.io import UserInputError

#: The HDF5 file inside a Minari dataset's ``data/`` folder.
MAIN_DATA_FILE = "main_data.hdf5"


class DatasetError(UserInputError):
    """The Minari dataset is missing, unreadable, empty or not a symgate dataset; the message names it."""


def dataset_folder(dataset_id: str) -> Path:
    """The dataset's folder under ``MINARI_DATASETS_PATH`` (it need not exist)."""
    from minari.storage import get_dataset_path  # heavy; only when a dataset is read

    return Path(get_dataset_path(dataset_id))


def open_dataset(dataset_id: str) -> tuple[Any, dict[str, Any]]:
    """Open a symgate Minari dataset.

    Args:
        dataset_id: Minari id, looked up in ``MINARI_DATASETS_PATH``.

    Returns:
        The ``minari.MinariDataset`` and its ``symgate`` metadata.

    Raises:
        DatasetError: The dataset does not exist, its files cannot be read, or it has no symgate metadata.
    """
    import minari  # heavy; only when a dataset is read

    folder = dataset_folder(dataset_id)
    if not (folder / "data").is_dir():
        raise DatasetError(
            f"dataset {dataset_id!r}: not found, {folder / 'data'} does not exist (datasets live in "
            "MINARI_DATASETS_PATH): make it with `symgate ingest`"
        )
    try:
        dataset = minari.load_dataset(dataset_id)
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError(f"dataset {dataset_id!r}: cannot read {folder / 'data'}: {error}") from error
    meta = dataset.storage.metadata.get("symgate")
    if not isinstance(meta, dict):
        raise DatasetError(f"dataset {dataset_id!r}: no symgate metadata (was it written by `symgate ingest`?)")
    return dataset, meta


def episodes(dataset: Any, dataset_id: str) -> Iterator[Any]:
    """The dataset's episodes, in order; a damaged ``main_data.hdf5`` is a :class:`DatasetError` naming it.

    Raises:
        DatasetError: The episode file is truncated, damaged or lacks an episode's arrays.
    """
    path = dataset_folder(dataset_id) / "data" / MAIN_DATA_FILE
    try:
        yield from dataset.iterate_episodes()
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError(
            f"dataset {dataset_id!r}: cannot read {path}: {error} (damaged or incomplete; re-run `symgate ingest`)"
        ) from error
