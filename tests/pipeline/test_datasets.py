"""Damaged datasets: every stage that reads one refuses it naming the dataset and file, and writes nothing."""

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.datasets import MAIN_DATA_FILE, DatasetError, dataset_folder, episodes, open_dataset
from pipeline.symmetry import check_symmetry, load_symmetry_spec
from pipeline.train import TrainConfig, train
from pipeline.train.buffer import load_offline_data
from tests.models.test_symmetry import REACHER_YAML

runner = CliRunner()


def damaged_copy(dataset: str, name: str, damage: str) -> tuple[str, Path]:
    """A copy of ``dataset`` as ``symgate/<name>-v0`` with its episode file truncated or its metadata garbled."""
    copy = f"symgate/{name}-v0"
    target = dataset_folder(copy)
    shutil.copytree(dataset_folder(dataset), target)
    metadata = target / "data" / "metadata.json"
    metadata.write_text(metadata.read_text().replace(dataset, copy))
    broken = target / "data" / (MAIN_DATA_FILE if damage == "truncated" else "metadata.json")
    if damage == "truncated":
        with broken.open("r+b") as file:
            file.truncate(broken.stat().st_size // 2)
    else:
        broken.write_text('{"dataset_id": ')
    return copy, broken


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_dataset_is_a_dataset_error_naming_the_file(dataset: str, damage: str) -> None:
    damaged, broken = damaged_copy(dataset, f"damaged-{damage}", damage)
    with pytest.raises(DatasetError, match=f"'{damaged}': cannot read {broken.parent}"):
        load_offline_data(damaged, torch.device("cpu"), 0.95)
    if damage == "truncated":
        with pytest.raises(DatasetError, match=rf"cannot read {broken}: .*truncated file"):
            list(episodes(open_dataset(damaged)[0], damaged))


def test_a_missing_dataset_says_where_it_was_looked_for(dataset: str) -> None:
    with pytest.raises(DatasetError, match=r"'symgate/nowhere-v0': not found, .*nowhere-v0/data does not exist"):
        open_dataset("symgate/nowhere-v0")


def test_train_on_a_truncated_dataset_is_one_line_and_leaves_no_run_folder(dataset: str, tmp_path: Path) -> None:
    damaged, broken = damaged_copy(dataset, "truncated-train", "truncated")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", damaged, "--out", str(out), "--steps", "2"])
    assert result.exit_code == 2, result.output
    assert str(broken) in result.output and "truncated file" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    with pytest.raises(DatasetError):
        train(TrainConfig(steps=2), damaged, out)
    assert not out.exists()


def test_symmetry_check_on_a_truncated_dataset_is_a_dataset_error(dataset: str) -> None:
    damaged, broken = damaged_copy(dataset, "truncated-symmetry", "truncated")
    with pytest.raises(DatasetError, match=f"cannot read {broken}"):
        check_symmetry(load_symmetry_spec(REACHER_YAML), damaged, samples=4)
