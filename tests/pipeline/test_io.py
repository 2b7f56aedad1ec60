import os
import stat
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.io import ConfigError, atomic_directory, atomic_write_json, load_config, sha256_file


class Example(BaseModel):
    rate_hz: float
    name: str = "x"


def test_load_config_reports_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rate_hz: fast\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid Example: rate_hz: Input should be a valid number"):
        load_config(path, Example)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of Example fields, got list"):
        load_config(path, Example)
    path.write_text("rate_hz: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, Example)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml", Example)
    path.write_text("rate_hz: 50\n")
    assert load_config(path, Example) == Example(rate_hz=50)


def test_atomic_json_has_normal_permissions_and_no_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["data.json"]


def test_atomic_directory_appears_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "result"
    with pytest.raises(RuntimeError), atomic_directory(final) as staging:
        (staging / "half.txt").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(final) as staging:
        (staging / "whole.txt").write_text("done")
    assert (final / "whole.txt").read_text() == "done"
    assert stat.S_IMODE(final.stat().st_mode) & 0o055  # readable by others, unlike mkdtemp's 0700
    with pytest.raises(FileExistsError):
        atomic_directory(final).__enter__()


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
