"""Clips of gate episodes: a fixed camera framed from the robot's workspace, TinyRenderer frames, GIFs.

PyBullet's ``getCameraImage`` with ``ER_TINY_RENDERER`` renders the arm headless in ``p.DIRECT``
(no display, no OpenGL); it does not draw debug lines, so the goal, the end effector's trail and,
faintly, the ring of goals about the base z axis are drawn onto each frame after projecting their
3-D points with the camera's own view and projection matrices (:meth:`Camera.project`; tested
against PyBullet's segmentation mask).

The camera is fixed for a whole report: it looks at the bounding sphere of every link frame at
the start of a set of contexts and of their goals (the profile's workspace as the gate runs it),
from 50° above the horizon, so every clip of a report shows the same view. A clip shows the
control steps at ``fps`` frames per simulated second (real time), the first and the last step
always, and holds the last frame for a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from pipeline.gate.replay import ArmScene, EpisodeTrace, arm_scene
from sim.bullet import pybullet


class RenderOptions(BaseModel):
    """Which gate episodes become clips in the report, and how they look."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size_px: int = Field(200, ge=64, le=640, description="Width and height of a clip, pixels.")
    fps: float = Field(10.0, gt=0.0, description="Frames per simulated second (clips play in real time).")
    worst_contexts: int = Field(4, ge=0, description="Clips of the worst contexts per suite (success < 1).")
    max_report_bytes: int = Field(
        5_000_000, ge=0, description="Size budget of all clips of one report; clips past it are left out and listed."
    )


@dataclass(frozen=True)
class Camera:
    """A fixed pinhole camera: PyBullet's view and projection matrices (column-major, OpenGL) and the image size."""

    width: int
    height: int
    view: tuple[float, ...]
    projection: tuple[float, ...]

    @classmethod
    def framing(
        cls, points: NDArray[np.float64], size: int, fov_deg: float = 40.0, azimuth_deg: float = -60.0,
        elevation_deg: float = 50.0, margin: float = 1.15,
    ) -> Camera:  # fmt: skip
        """A camera seeing the bounding sphere of ``points`` ``(N, 3)`` (times ``margin``) from the given direction."""
        low, high = points.min(axis=0), points.max(axis=0)
        target = (low + high) / 2.0
        radius = max(float(np.linalg.norm(points - target, axis=1).max()), 0.05) * margin
        distance = radius / math.sin(math.radians(fov_deg) / 2.0)
        azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
        direction = np.array(
            [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
        )
        eye = target + distance * direction
        view = pybullet.computeViewMatrix(
            cameraEyePosition=eye.tolist(), cameraTargetPosition=target.tolist(), cameraUpVector=(0.0, 0.0, 1.0)
        )
        projection = pybullet.computeProjectionMatrixFOV(
            fov=fov_deg, aspect=1.0, nearVal=max(0.01, distance - 2.0 * radius), farVal=distance + 2.0 * radius
        )
        return cls(size, size, tuple(view), tuple(projection))

    def _matrices(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return np.array(self.view).reshape(4, 4).T, np.array(self.projection).reshape(4, 4).T

    def project(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """World points ``(N, 3)`` → image coordinates ``(N, 2)``: column and row, in pixel indices.

        TinyRenderer's rows run bottom-up in OpenGL's convention and are flipped, hence the row's -1
        (checked against its segmentation mask).
        """
        view, projection = self._matrices()
        homogeneous = np.column_stack([points, np.ones(len(points))])
        clip = homogeneous @ (projection @ view).T
        ndc = clip[:, :3] / clip[:, 3:4]
        return np.column_stack([(ndc[:, 0] + 1.0) / 2.0 * self.width, (1.0 - ndc[:, 1]) / 2.0 * self.height - 1.0])

    def pixel_radius(self, centre: NDArray[np.float64], radius: float) -> float:
        """The image radius, pixels, of a sphere of ``radius`` m at ``centre`` (along the camera's right axis)."""
        view, _ = self._matrices()
        right = view[0, :3]  # the first row of the world → camera rotation
        a, b = self.project(np.stack([centre, centre + radius * right]))
        return float(np.linalg.norm(b - a))

    def capture(self, scene: ArmScene) -> NDArray[np.uint8]:
        """The scene's current image, ``(H, W, 3)`` RGB, rendered on the CPU (TinyRenderer)."""
        _, _, rgba, _, _ = scene.bullet.getCameraImage(
            self.width, self.height, self.view, self.projection, renderer=pybullet.ER_TINY_RENDERER
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)[..., :3].copy()


def workspace_points(env_id: str, env_kwargs: dict[str, Any], contexts: Sequence[float]) -> NDArray[np.float64]:
    """Every link frame at the start of each context, and each context's goal, ``(N, 3)`` m (one env, seed 0)."""
    env = gym.make(env_id, **env_kwargs)
    points = []
    try:
        for context in contexts:
            env.reset(seed=0, options={"context": float(context)})
            scene = arm_scene(env)
            points += [*scene.link_poses()[:, :3], scene.arm.goal, np.zeros(3)]
    finally:
        env.close()
    return np.array(points)


def frame_step(control_hz: float, fps: float) -> int:
    """Control steps between two frames of a clip."""
    return max(1, round(control_hz / fps))


def clip_frame_count(steps: int, every: int) -> int:
    """Frames of a clip of an episode of ``steps`` control steps: steps 0, every, 2·every, … and the last."""
    return steps // every + 1 + (1 if steps % every else 0)


def write_clip(trace: EpisodeTrace, camera: Camera, path: Path, fps: float) -> int:
    """Draw the goal, the end effector's trail and a caption onto the trace's frames; write them as a GIF.

    Returns:
        The file's size, bytes.
    """
    assert trace.arm is not None and trace.frames, "replay the episode with a camera first"
    arm, record = trace.arm, trace.evaluated
    path_px = camera.project(trace.end_effector_path)
    goal_px = camera.project(arm.goal[None, :])[0]
    goal_r = max(camera.pixel_radius(arm.goal, arm.success_radius), 2.0)
    bearing = np.linspace(0.0, 2.0 * math.pi, 73)
    ring_radius = float(np.linalg.norm(arm.goal[:2]))  # the goal's ring about the base z axis: where goals lie
    ring = camera.project(
        np.column_stack([ring_radius * np.cos(bearing), ring_radius * np.sin(bearing), np.full(73, arm.goal[2])])
    )
    ring_px = [tuple(p) for p in ring.tolist()]
    outcome = "reached" if record.success else "missed"
    images = []
    for step, frame in trace.frames:
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        draw.line(ring_px, fill=(200, 200, 200), width=1)
        box = (goal_px[0] - goal_r, goal_px[1] - goal_r, goal_px[0] + goal_r, goal_px[1] + goal_r)
        draw.ellipse(box, outline=(20, 160, 40), width=2)
        trail = [tuple(p) for p in path_px[: step + 1].tolist()]
        if len(trail) > 1:
            draw.line(trail, fill=(220, 40, 40), width=2)
        x, y = path_px[step]
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(220, 40, 40))
        draw.text((4, 3), f"{record.suite}  {math.degrees(trace.context_rad):.0f} deg  {outcome}", fill=(0, 0, 0))
        draw.text((4, camera.height - 14), f"t = {step / trace.control_hz:.2f} s", fill=(0, 0, 0))
        images.append(image.quantize(colors=64, method=Image.Quantize.MEDIANCUT))
    durations = [round(1000.0 / fps)] * len(images)
    durations[-1] = 1000
    temporary = path.with_name(f".{path.name}.tmp")
    images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    temporary.replace(path)
    return path.stat().st_size
