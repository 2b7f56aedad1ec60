"""``symgate ingest``: bags → Minari dataset (hdf5) + quality report, atomically.

One bag per worker process or Ray task (read, clean, segment, resample, reward), then the main process writes
the dataset with ``EpisodeBuffer`` + ``create_dataset_from_buffers`` into a staging folder inside
``MINARI_DATASETS_PATH`` and renames it into place. The dataset loads with plain
``minari.load_dataset(id)``; its metadata (key ``symgate``) records field names and units, joint
names, control rate, the ingest config and its hash, the source bags' hashes and every episode's
source bag and time span, and ``eval_env_spec`` names the matching symgate env.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

import sim
from pipeline import __version__
from pipeline.executor import LOCAL, Executor, run_unordered
from pipeline.ingest.bag import EmptyBagError, IngestError, read_bag
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.episodes import ActionSpec, DroppedEpisode, Episode, build_episode, segment
from pipeline.ingest.report import BagReport, EpisodeReport, QualityReport, TopicReport
from pipeline.io import atomic_write_json, atomic_write_text, sha256_file
from sim.robot import RobotDescription, load_robot_description
from sim.robots.interface import SimulatedArm
from sim.robots.profile import Robot, load_profile

REPORT_JSON = "quality_report.json"
REPORT_MD = "quality_report.md"


def datasets_root() -> Path:
    """Where Minari keeps datasets: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def find_bags(paths: Sequence[Path]) -> list[Path]:
    """Expand arguments into bags: rosbag2 folders (with ``metadata.yaml``), bare ``.mcap`` files, folders of them."""
    bags: list[Path] = []
    for path in paths:
        if (path / "metadata.yaml").is_file() or (path.is_file() and path.suffix == ".mcap"):
            bags.append(path)
        elif path.is_dir():
            found = sorted([p.parent for p in path.glob("*/metadata.yaml")] + list(path.glob("*.mcap")))
            if not found:
                raise FileNotFoundError(
                    f"{path}: neither a rosbag2 folder (metadata.yaml), a .mcap file nor a folder of them"
                )
            bags.extend(found)
        else:
            raise FileNotFoundError(f"{path}: no such bag or folder")
    names = [bag.name for bag in bags]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise IngestError(duplicates[0], "two bags share this folder name; episodes would be ambiguous")
    return bags


@dataclass
class _EvalEnv:
    """What ingestion needs to know of the eval env, checked once against the config."""

    spec: gym.envs.registration.EnvSpec
    observation_space: gym.spaces.Space[Any]
    action_space: gym.spaces.Space[Any]
    observation_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_spec: ActionSpec


def _robot(config: IngestConfig) -> RobotDescription | Robot:
    """The robot whose forward kinematics the reach rule uses: the profile's, or the reacher URDF's."""
    return load_profile(config.robot) if config.robot is not None else load_robot_description(config.env.urdf)


def _eval_env(config: IngestConfig) -> _EvalEnv:
    """The dataset's eval env (the profile's, or the paper reacher's), checked against the mapping's names."""
    if config.robot is None and config.env_id not in (sim.CONTINUOUS_ENV_ID, sim.DISCRETE_ENV_ID):
        raise IngestError(
            config.env_id, f"env_id must be a symgate reacher env ({sim.CONTINUOUS_ENV_ID} or {sim.DISCRETE_ENV_ID})"
        )
    kwargs: dict[str, Any] = (
        {"robot": config.robot}
        if config.robot is not None
        else {"config": config.env.model_dump(mode="json", exclude_defaults=True)}
    )
    env = gym.make(config.env_id, **kwargs)
    try:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, SimulatedArm):
            raise IngestError(config.env_id, "env_id must be a symgate reach env")
        _check_names(config, unwrapped.observation_names, unwrapped.action_names)
        return _EvalEnv(
            spec=dataclasses.replace(gym.spec(config.env_id), kwargs=kwargs),
            observation_space=unwrapped.observation_space,
            action_space=unwrapped.action_space,
            observation_names=unwrapped.observation_names,
            action_names=unwrapped.action_names,
            action_spec=ActionSpec(*unwrapped.action_bounds, table=unwrapped.discrete_actions),
        )
    finally:
        env.close()


def _check_names(config: IngestConfig, observation_names: tuple[str, ...], action_names: tuple[str, ...]) -> None:
    """The mapping must produce exactly the env's observation and action names, in the env's order."""
    produced = tuple(f"{name}.{c}" for name, m in config.observations.items() for c in m.component_names)
    if config.hindsight_goal is not None:
        produced += tuple(f"{config.hindsight_goal.field}.{c}" for c in "xyz")
    if produced != observation_names:
        raise IngestError(
            config.env_id, f"observations produce {list(produced)}, the env observes {list(observation_names)}"
        )
    components = config.action_mapping.component_names
    if config.twist is not None and config.robot is not None:  # twists become the profile's joint targets
        components = load_profile(config.robot).joint_names
    actions = tuple(f"{config.action_name}.{c}" for c in components)
    if actions != action_names:
        raise IngestError(config.env_id, f"action produces {list(actions)}, the env expects {list(action_names)}")


@dataclass
class BagResult:
    """One bag's episodes and its report."""

    episodes: list[Episode]
    report: BagReport


def process_bag(
    bag: Path, config: IngestConfig, robot: RobotDescription | Robot, action_spec: ActionSpec, strict: bool
) -> BagResult:
    """Read one bag and turn it into episodes (the per-worker unit of work)."""
    files = [bag] if bag.is_file() else sorted(f for f in bag.iterdir() if f.is_file())
    hashes = {f.name: sha256_file(f) for f in files}
    try:
        signals = read_bag(bag, config, strict=strict)
    except EmptyBagError:
        if strict:
            raise
        return BagResult([], BagReport(bag=bag.name, sha256=hashes, skipped="empty bag"))
    report = BagReport(
        bag=bag.name,
        sha256=hashes,
        duration_s=(signals.end_ns - signals.start_ns) / 1e9,
        message_counts={topic: stats.messages for topic, stats in signals.topics.items()},
        topics={topic: TopicReport(**dataclasses.asdict(stats)) for topic, stats in signals.topics.items()},
        repairs={name: dataclasses.asdict(issues) for name, issues in signals.issues.items()},
        bad_markers=signals.bad_markers,
        trailing_bytes=signals.trailing_bytes,
    )
    episodes = []
    for span in segment(signals, config):
        result = build_episode(span, signals, config, robot, action_spec)
        start_s = (span.start_ns - signals.start_ns) / 1e9
        if isinstance(result, DroppedEpisode):
            if strict:
                if signals.markers:
                    topic = config.episodes.marker_topic
                elif config.episodes.segment_by == "markers":  # cut at goal changes
                    topic = config.observations[config.episodes.goal_field].topic
                else:
                    topic = config.action_mapping.topic
                raise IngestError(bag, f"episode dropped: {result.reason}", topic=topic, time_ns=result.start_ns)
            report.episodes.append(
                EpisodeReport(start_s=start_s, kept=False, reason=result.reason, controller=span.controller)
            )
            continue
        if strict and (result.actions_clipped or result.actions_snapped):
            raise IngestError(
                bag,
                "commands beyond the torque limits or off the action grid",
                topic=config.action_mapping.topic,
                time_ns=span.start_ns,
            )
        episodes.append(result)
        report.episodes.append(
            EpisodeReport(
                start_s=start_s,
                kept=True,
                reason=result.end_reason,
                steps=len(result.actions),
                success=bool(result.terminations[-1]),
                controller=result.controller,
                actions_held=result.actions_held,
                actions_clipped=result.actions_clipped,
                actions_snapped=result.actions_snapped,
            )
        )
    return BagResult(episodes, report)


def _process_bag_in_worker(item: tuple[str, str, ActionSpec, bool]) -> BagResult:
    bag, config_json, action_spec, strict = item
    config = IngestConfig.model_validate_json(config_json)
    return process_bag(Path(bag), config, _robot(config), action_spec, strict)


@contextmanager
def _datasets_path(path: Path) -> Iterator[None]:
    """Point Minari at ``path`` for the duration of the block."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _metadata(
    config: IngestConfig,
    env: _EvalEnv,
    robot: RobotDescription | Robot,
    results: list[BagResult],
    episodes: list[Episode],
) -> dict[str, Any]:
    action = config.action_mapping
    return {
        "symgate_version": __version__,
        "observation_names": list(env.observation_names),
        "observation_units": {
            **{name: m.unit for name, m in config.observations.items()},
            **({} if config.hindsight_goal is None else {config.hindsight_goal.field: "m"}),
        },
        "action_names": list(env.action_names),
        "action_units": {config.action_name: action.unit if config.twist is None else "rad/s"},
        "discrete_action_torques": None if env.action_spec.table is None else env.action_spec.table.tolist(),
        "joint_names": list(robot.joint_names),
        "control_hz": config.control_hz,
        "reward_rule": config.reward.kind,  # none: no task signal, all rewards 0 (train refuses value-based methods)
        "ingest_config": config.model_dump(mode="json"),
        "ingest_config_sha256": config.sha256(),
        "source_bags": {r.report.bag: r.report.sha256 for r in results},
        "episodes": [
            {
                "source_bag": e.source_bag,
                "start_ns": e.start_ns,
                "end_ns": e.end_ns,
                "end_reason": e.end_reason,
                "controller": e.controller,
            }
            for e in episodes
        ],
    }


def ingest(
    paths: Sequence[Path],
    config: IngestConfig,
    dataset_id: str,
    *,
    workers: int | None = None,
    executor: Executor = LOCAL,
    strict: bool = False,
    overwrite: bool = False,
    on_bag: Callable[[], None] | None = None,
) -> tuple[Path, QualityReport]:
    """Ingest bags into a Minari dataset; all or nothing.

    Args:
        paths: Bag folders and/or folders of bags.
        config: The ingest mapping.
        dataset_id: Minari id, ``namespace/name-vN``.
        workers: Local parallel processes (default: one per bag, at most the CPU count); 1 runs inline.
        executor: Local processes, or one Ray task per bag on a cluster (bags read where they lie: on a
            multi-node cluster, at the same path on every node). The driver writes the dataset either way.
        strict: Turn every repair into an error.
        overwrite: Replace an existing dataset with the same id.
        on_bag: Called once per finished bag.

    Returns:
        The dataset folder and the quality report (also written into that folder).

    Raises:
        IngestError: Bad input; nothing was written.
        FileExistsError: The dataset exists and ``overwrite`` is false.
    """
    root = datasets_root()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: dataset {dataset_id} already exists; refusing to overwrite it (--overwrite)")
    bags = find_bags(paths)
    env = _eval_env(config)
    robot = _robot(config)
    workers = workers or min(len(bags), os.cpu_count() or 1)
    results: list[BagResult] = []
    if workers == 1 and executor.kind == "local":
        for bag in bags:
            results.append(process_bag(bag, config, robot, env.action_spec, strict))
            if on_bag:
                on_bag()
    else:
        # A Ray worker's working directory is not ours: it gets absolute paths.
        paths = [bag.resolve() if executor.kind == "ray" else bag for bag in bags]
        items = [(str(path), config.model_dump_json(), env.action_spec, strict) for path in paths]
        by_bag: dict[int, BagResult] = {}
        for index, result in run_unordered(
            _process_bag_in_worker,
            items,
            executor=executor,
            workers=workers,
            start_method="spawn",
            name="symgate-ingest",
        ):
            by_bag[index] = result
            if on_bag:
                on_bag()
        results = [by_bag[index] for index in range(len(bags))]  # bag order, whichever finished first
    episodes = [episode for result in results for episode in result.episodes]
    state_topics = sorted({m.topic for m in config.observations.values() if not m.latched})
    report = QualityReport(
        dataset_id=dataset_id,
        ingest_config_sha256=config.sha256(),
        state_topics=state_topics,
        bags=[r.report for r in results],
    )
    if not episodes:
        reasons = sorted(
            {e.reason for r in results for e in r.report.episodes} | {r.report.skipped or "" for r in results} - {""}
        )
        raise IngestError(
            ", ".join(b.name for b in bags),
            f"no usable episodes ({'; '.join(reasons) or 'none found'}); nothing written",
        )
    _write_dataset(root, dataset_id, config, env, robot, results, episodes, report, overwrite)
    return final, report


def _write_dataset(
    root: Path,
    dataset_id: str,
    config: IngestConfig,
    env: _EvalEnv,
    robot: RobotDescription | Robot,
    results: list[BagResult],
    episodes: list[Episode],
    report: QualityReport,
    overwrite: bool,
) -> None:
    import minari  # heavy; only needed here
    from minari.data_collector import EpisodeBuffer

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".symgate-ingest-", dir=root))
    try:
        buffers = [
            EpisodeBuffer(
                id=index,
                observations=episode.observations,
                actions=episode.actions,
                rewards=episode.rewards.tolist(),
                terminations=episode.terminations.tolist(),
                truncations=episode.truncations.tolist(),
            )
            for index, episode in enumerate(episodes)
        ]
        with _datasets_path(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # minari warns about optional metadata we do not use
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                eval_env=env.spec,
                observation_space=env.observation_space,
                action_space=env.action_space,
                algorithm_name=f"symgate ingest {__version__}",
                author={"symgate"},
                author_email={"symgate@localhost"},
                code_permalink="https://symgate.invalid/ingest",
                description=f"Ingested from {len(results)} ROS 2 bags by symgate {__version__}.",
                data_format="hdf5",
            )
            dataset.storage.update_metadata({"symgate": _metadata(config, env, robot, results, episodes)})
            dataset.storage.update_episode_metadata(
                [
                    {"source_bag": e.source_bag, "start_ns": e.start_ns, "end_ns": e.end_ns, "end_reason": e.end_reason}
                    for e in episodes
                ]
            )
        staged = staging / dataset_id
        atomic_write_json(staged / REPORT_JSON, report.model_dump(mode="json"))
        atomic_write_text(staged / REPORT_MD, report.markdown())
        final = root / dataset_id
        final.parent.mkdir(parents=True, exist_ok=True)
        namespace_meta = staged.parent / "namespace_metadata.json"
        if namespace_meta.exists() and not (final.parent / namespace_meta.name).exists():
            namespace_meta.replace(final.parent / namespace_meta.name)
        if not final.exists():
            staged.rename(final)
        elif not overwrite:
            raise FileExistsError(f"{final}: appeared while ingesting; refusing to overwrite it")
        else:  # swap, putting the old dataset back if the swap fails
            previous = staging / "previous"
            final.rename(previous)
            try:
                staged.rename(final)
            except BaseException:
                previous.rename(final)
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
