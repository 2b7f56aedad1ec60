from pathlib import Path

import pytest

from pipeline.gate import GateConfig
from pipeline.io import ConfigError, load_config

REPO = Path(__file__).resolve().parents[3]


def test_shipped_yaml_equals_the_built_in_defaults() -> None:
    assert load_config(REPO / "deploy/gate/reacher.yaml", GateConfig) == GateConfig()


def test_defaults_gate_held_out_rotations_against_the_data_context() -> None:
    config = GateConfig()
    assert config.env.contexts.train_deg == (0.0,)
    assert config.suite("test").min_success == 0.9 and config.suite("test").contexts == "test"
    assert config.suite("test-randomized").randomization.enabled


def test_gap_must_name_existing_suites(tmp_path: Path) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text("suites: [{name: heldout, contexts: test}]\ngap: {train_suite: train, held_out_suite: heldout}\n")
    with pytest.raises(ConfigError, match=r"gate.yaml.*gap.train_suite: no suite named 'train'"):
        load_config(path, GateConfig)


def test_duplicate_suite_names_and_bad_thresholds_are_named(tmp_path: Path) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text("suites: [{name: a, contexts: test}, {name: a, contexts: train}]\ngap: null\n")
    with pytest.raises(ConfigError, match="suite names must be unique"):
        load_config(path, GateConfig)
    path.write_text("suites: [{name: a, contexts: test, min_success: 1.5}]\ngap: null\n")
    with pytest.raises(ConfigError, match=r"suites.0.min_success"):
        load_config(path, GateConfig)
