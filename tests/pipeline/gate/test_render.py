import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from PIL import GifImagePlugin, Image

from pipeline.gate import REPORT_JSON, REPORT_MD, run_gate
from pipeline.gate.render import Camera, RenderOptions, clip_frame_count, write_clip
from pipeline.gate.replay import arm_scene
from sim import ARM_ENV_ID, CONTINUOUS_ENV_ID
from sim.bullet import pybullet
from tests.pipeline.gate.conftest import ProfileRun, small_gate


@pytest.mark.parametrize(("env_id", "kwargs"), [(ARM_ENV_ID, {"robot": "kuka_iiwa"}), (CONTINUOUS_ENV_ID, {})])
def test_projected_points_land_on_what_the_tiny_renderer_draws_there(env_id: str, kwargs: dict[str, Any]) -> None:
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0, options={"context": 0.4})
    scene = arm_scene(env)
    bullet = scene.bullet
    points = np.array([[0.3, -0.2, 0.1], [-0.25, 0.3, 0.4], [0.1, 0.35, 0.0], [0.4, 0.4, 0.6]])
    shape = bullet.createVisualShape(pybullet.GEOM_SPHERE, radius=0.01)
    markers = [
        bullet.createMultiBody(baseMass=0.0, baseVisualShapeIndex=shape, basePosition=p.tolist()) for p in points
    ]
    camera = Camera.framing(np.vstack([points, scene.link_poses()[:, :3]]), 160)
    _, _, _, _, segmentation = bullet.getCameraImage(
        160, 160, camera.view, camera.projection, renderer=pybullet.ER_TINY_RENDERER
    )
    mask = np.asarray(segmentation).reshape(160, 160)
    visible = 0
    for marker, projected in zip(markers, camera.project(points), strict=True):
        rows, columns = np.nonzero(mask == marker)
        if len(rows) == 0:
            continue  # behind the arm
        visible += 1
        assert np.allclose([columns.mean(), rows.mean()], projected, atol=0.5)  # the marker's pixels centre there
    assert visible >= 3
    env.close()


def test_clips_of_a_profile_robot_have_the_stated_frames_size_goal_and_trail(
    profile_run: ProfileRun, tmp_path: Path
) -> None:
    run = profile_run
    assert all(trace.reproduced for trace in run.traces)  # the replay is the evaluated episode
    for trace in run.traces:
        steps = trace.evaluated.steps
        assert len(trace.command) == steps and len(trace.link_poses) == steps + 1
        path = tmp_path / f"{trace.evaluated.context_index}.gif"
        size = write_clip(trace, run.camera, path, RenderOptions().fps)
        with Image.open(path) as clip:  # a GifImageFile
            assert isinstance(clip, GifImagePlugin.GifImageFile)
            assert clip.format == "GIF" and clip.size == (200, 200) and size == path.stat().st_size
            assert clip.n_frames == len(trace.frames) == clip_frame_count(steps, run.every)
            clip.seek(clip.n_frames - 1)
            last = np.asarray(clip.convert("RGB")).astype(int)
        red = (last[..., 0] > 180) & (last[..., 1] < 90) & (last[..., 2] < 90)
        green = (last[..., 1] > 130) & (last[..., 0] < 60) & (last[..., 2] < 80)
        assert red.sum() > 10 and green.sum() > 10  # the end-effector trail and the goal are drawn
        if trace.evaluated.success:
            x, y = run.camera.project(trace.end_effector_path[-1:])[0]
            gx, gy = run.camera.project(trace.arm.goal[None, :])[0]  # type: ignore[union-attr]
            assert np.hypot(x - gx, y - gy) <= run.camera.pixel_radius(trace.arm.goal, 0.05) + 1  # type: ignore[union-attr]


def test_gate_numbers_are_identical_with_rendering_on_and_off(unsymmetrised_model: Path, tmp_path: Path) -> None:
    config = small_gate()
    plain = run_gate(unsymmetrised_model, config, workers=1, report_dir=tmp_path / "off").report
    rendered = run_gate(unsymmetrised_model, config, workers=2, report_dir=tmp_path / "on", render=RenderOptions())
    report = rendered.report
    varying = {"created", "wall_time_s", "workers", "clips", "rendering", "recording"}
    assert plain.model_dump_json(exclude=varying) == report.model_dump_json(exclude=varying)  # NaN-safe
    assert plain.clips == () and plain.rendering is None and not list((tmp_path / "off").glob("*.gif"))

    test = next(s for s in report.suites if s.name == "test")
    failing = sorted(c.success.mean for c in test.per_context if c.success.mean < 1.0)
    test_clips = [c for c in report.clips if c.suite == "test"]
    assert sum("worst" in c.why for c in test_clips) == min(4, len(failing))
    assert sum("typical pass" in c.why for c in test_clips) == (1 if len(failing) < test.contexts else 0)
    assert next(c.why for c in report.clips if c.suite == "train")[-1] == "training context"
    assert report.rendering is not None and report.rendering.bytes <= RenderOptions().max_report_bytes
    markdown = (tmp_path / "on" / REPORT_MD).read_text()
    every = round(50 / RenderOptions().fps)
    for clip in report.clips:
        episode = next(
            e
            for e in report.episodes
            if (e.suite, e.context_index, e.episode) == (clip.suite, clip.context_index, clip.episode)
        )
        assert clip.reproduced and (clip.success, clip.steps, clip.seed) == (
            episode.success,
            episode.steps,
            episode.seed,
        )
        with Image.open(tmp_path / "on" / clip.file) as gif:
            assert isinstance(gif, GifImagePlugin.GifImageFile)
            assert gif.size == (clip.width, clip.height) == (200, 200)
            assert gif.n_frames == clip.frames == clip_frame_count(clip.steps, every)
        assert f"![{clip.file}]({clip.file})" in markdown and f"{clip.angle_deg:.0f}°" in markdown
    assert json.loads((tmp_path / "on" / REPORT_JSON).read_text())["clips"][0]["file"] == report.clips[0].file


def test_clips_past_the_size_budget_are_left_out_and_listed(unsymmetrised_model: Path, tmp_path: Path) -> None:
    report = run_gate(
        unsymmetrised_model, small_gate(), workers=1, report_dir=tmp_path, render=RenderOptions(max_report_bytes=1)
    ).report
    assert len(report.clips) == 1 and report.rendering is not None and len(report.rendering.left_out) >= 1
    assert "Left out (size budget)" in (tmp_path / REPORT_MD).read_text()
    assert sorted(p.name for p in tmp_path.glob("*.gif")) == [report.clips[0].file]
