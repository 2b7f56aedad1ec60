"""``symgate ingest inspect`` on bags from an independent writer: the summary matches what was written, and
the draft mapping, edited as a user would, ingests the bag to its ground truth."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ingest import IngestConfig, ingest
from pipeline.ingest.inspect import draft_mapping, inspect_bag
from pipeline.io import load_config
from tests.pipeline.test_ingest_other_loggers import (
    DATASET_ID,
    EPOCH,
    JOINT_STATE,
    LOGGED_NAMES,
    NS,
    assert_matches_truth,
    load,
    write_teleop_like_bag,
)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def test_inspect_reports_what_the_writer_wrote(tmp_path: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "teleop", episodes=3)
    topics = {t.topic: t for t in inspect_bag(logged.path).topics}
    assert set(topics) == {"/joint_states", "/joint_commands", "/goal", "/episode"}
    state = topics["/joint_states"]
    assert state.msgtype == JOINT_STATE and state.messages == len(logged.state_stamps) and state.decodable
    assert state.joint_names == [list(LOGGED_NAMES)] and state.array_lengths["position"] == [3]
    assert state.array_lengths["effort"] == [0]
    assert state.rate_hz == pytest.approx(100, rel=0.05) and topics["/joint_commands"].rate_hz == pytest.approx(
        50, rel=0.05
    )
    assert topics["/joint_commands"].messages == 3 * 60 and topics["/episode"].messages == 6
    assert state.header_offset_s is not None
    low, median, high = state.header_offset_s
    assert 0.0005 <= low <= median <= high <= 0.003  # logged 0.5–3 ms after the stamp
    assert topics["/joint_commands"].header_offset_s is None


def test_draft_for_sim_time_stamps_shifts_them_onto_the_log_clock(tmp_path: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "sim", episodes=1, header_clock_ns=EPOCH - 12 * NS)
    draft = yaml.safe_load(draft_mapping([inspect_bag(logged.path)]))
    assert draft["observations"]["joint_position"]["time_base"] == "header_shifted"


def test_edited_draft_ingests_the_bag_to_its_ground_truth(tmp_path: Path, root: Path) -> None:
    """The README's worked example: inspect, edit the TODOs, ingest, compare with what was written."""
    logged = write_teleop_like_bag(tmp_path / "bags" / "teleop_01", episodes=2)
    runner = CliRunner()
    draft = tmp_path / "teleop.yaml"
    result = runner.invoke(app, ["ingest", "inspect", str(logged.path), "--draft", str(draft)])
    assert result.exit_code == 0, result.output
    assert "joints on /joint_states: elbow, wrist_unused, shoulder" in result.output and draft.exists()
    text = draft.read_text()
    assert text.count("TODO") >= 4 and all(
        "#" in line for line in text.splitlines() if line.strip().startswith(("topic", "path"))
    )
    edited = (
        text.replace("[elbow, wrist_unused, shoulder]", "[shoulder, elbow]")
        .replace("[TODO_1, TODO_2]", "[shoulder, elbow]")
        .replace("unit: TODO", "unit: N·m")
    )
    config_file = tmp_path / "teleop-edited.yaml"
    config_file.write_text(edited)
    config = load_config(config_file, IngestConfig)
    _, report = ingest([logged.path], config, DATASET_ID, workers=1)
    assert [e.reason for e in report.bags[0].episodes] == ["end_marker", "end_marker"]
    for episode, truth_episode in zip(load(), logged.episodes, strict=True):
        assert_matches_truth(episode, truth_episode, steps=60)
    assert np.asarray(load()[0].actions).shape == (60, 2)


def test_draft_for_trajectory_commands_reads_the_point_active_at_the_tick(tmp_path: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "trajectory", episodes=1, trajectory_chunk=5)
    action = yaml.safe_load(draft_mapping([inspect_bag(logged.path)]))["action"]["joint_effort"]
    assert action["topic"] == "/joint_trajectory" and action["names_path"] == "joint_names"
    assert action["resample"] == "zero_order_hold"
