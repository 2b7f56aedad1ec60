import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint


def _setup(seed: int) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer], list[torch.Generator]]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    return {"net": net}, {"opt": optimizer}, [torch.Generator().manual_seed(seed + i) for i in range(2)]


def _train(
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: list[torch.Generator],
    steps: int,
) -> None:
    for _ in range(steps):
        x = torch.randn(8, 3, generator=generators[0])
        loss = modules["net"](x).pow(2).mean()
        optimizers["opt"].zero_grad()
        loss.backward()
        optimizers["opt"].step()


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path: Path) -> None:
    straight = _setup(0)
    _train(*straight, steps=10)

    first = _setup(0)
    _train(*first, steps=4)
    save_checkpoint(tmp_path, 4, *first, {"note": "x"})
    resumed = _setup(123)  # a fresh process: different weights and RNG until loaded
    state = load_checkpoint(latest_checkpoint(tmp_path) or tmp_path, *resumed)
    assert state["step"] == 4 and state["note"] == "x"
    _train(*resumed, steps=6)
    for a, b in zip(straight[0]["net"].state_dict().values(), resumed[0]["net"].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_only_the_last_two_checkpoints_are_kept_and_latest_points_at_the_newest(tmp_path: Path) -> None:
    modules, optimizers, generators = _setup(0)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, modules, optimizers, generators, {})
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000002", "step_0000003"]
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 3
    assert latest_checkpoint(tmp_path) == tmp_path / "step_0000003"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_corrupt_checkpoint_is_a_named_error(tmp_path: Path) -> None:
    modules, optimizers, generators = _setup(0)
    path = save_checkpoint(tmp_path, 1, modules, optimizers, generators, {})
    (path / "tensors.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="step_0000001: corrupt or incomplete checkpoint"):
        load_checkpoint(path, modules, optimizers, generators)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    modules, optimizers, generators = _setup(0)
    path = save_checkpoint(tmp_path, 1, modules, optimizers, generators, {})
    other = {"net": nn.Sequential(nn.Linear(3, 5))}
    with pytest.raises(CheckpointError, match="weights of net do not fit"):
        load_checkpoint(path, other, {}, [])


def test_no_pickle_in_a_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, *_setup(0), {})
    assert sorted(p.name for p in path.iterdir()) == ["state.json", "tensors.safetensors"]
    assert b"\x80\x04" not in (path / "tensors.safetensors").read_bytes()[:16]  # no pickle protocol header
