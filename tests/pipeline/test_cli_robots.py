from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_robots_list_shows_both_profiles() -> None:
    result = runner.invoke(app, ["robots", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "kuka_iiwa" in result.output
    assert "reacher" in result.output


def test_robots_show_prints_joints_limits_and_the_derived_symmetry() -> None:
    result = runner.invoke(app, ["robots", "show", "kuka_iiwa"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "lbr_iiwa_joint_7" in result.output
    assert "velocity targets at 20 Hz, physics 240 Hz (12 steps per command)" in result.output
    assert "angle_shift" in result.output


def test_robots_show_reports_a_bad_profile_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "robot.yaml"
    bad.write_text("name: x\n")
    result = runner.invoke(app, ["robots", "show", str(bad)], terminal_width=400)
    assert result.exit_code == 2
    assert f"{bad}: urdf: Field required" in result.output
