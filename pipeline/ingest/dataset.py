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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
T = TypeVar("T")
R = TypeVar("R")


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


def _episode_record(episode: Episode) -> dict[str, Any]:
    """Where an episode came from (the dataset metadata's ``episodes`` entry)."""
    return {
        "source_bag": episode.source_bag,
        "start_ns": episode.start_ns,
        "end_ns": episode.end_ns,
        "end_reason": episode.end_reason,
        "controller": episode.controller,
    }


def _metadata(
    config: IngestConfig,
    env: _EvalEnv,
    robot: RobotDescription | Robot,
    reports: list[BagReport],
    episodes: list[dict[str, Any]],
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
        "source_bags": {r.bag: r.sha256 for r in reports},
        "episodes": episodes,
    }


def _buffers(episodes: Iterable[Episode]) -> Iterator[Any]:
    """Minari ``EpisodeBuffer``s of ingested episodes, numbered from 0."""
    from minari.data_collector import EpisodeBuffer

    for index, episode in enumerate(episodes):
        yield EpisodeBuffer(
            id=index,
            observations=episode.observations,
            actions=episode.actions,
            rewards=episode.rewards.tolist(),
            terminations=episode.terminations.tolist(),
            truncations=episode.truncations.tolist(),
        )


def _quality_report(dataset_id: str, config: IngestConfig, reports: list[BagReport]) -> QualityReport:
    """The run's report; refuses a run without a usable episode (nothing is written then)."""
    report = QualityReport(
        dataset_id=dataset_id,
        ingest_config_sha256=config.sha256(),
        state_topics=sorted({m.topic for m in config.observations.values() if not m.latched}),
        bags=reports,
    )
    if not report.kept:
        reasons = sorted({e.reason for r in reports for e in r.episodes} | {r.skipped or "" for r in reports} - {""})
        raise IngestError(
            ", ".join(r.bag for r in reports),
            f"no usable episodes ({'; '.join(reasons) or 'none found'}); nothing written",
        )
    return report


def ingest(
    paths: Sequence[Path],
    config: IngestConfig,
    dataset_id: str,
    *,
    workers: int | None = None,
    executor: Executor = LOCAL,
    shards: bool | None = None,
    strict: bool = False,
    overwrite: bool = False,
    on_bag: Callable[[], None] | None = None,
) -> tuple[Path, QualityReport]:
    """Ingest bags into a Minari dataset; all or nothing.

    Two modes give the same dataset (arrays, episode order, metadata and quality report):

    - driver mode: each task returns its bag's episodes and the driver writes the dataset; the driver
      holds every episode in memory at once.
    - shard mode (``shards``): each task writes its bag's episodes as one shard (a Minari/HDF5 dataset,
      atomically, under ``MINARI_DATASETS_PATH``); the driver then copies the shards' episodes, in
      bag order, one HDF5 group at a time, into the dataset (:func:`merge_shards`). The driver holds
      no episode in memory; shards are removed afterwards, whatever happened.

    Args:
        paths: Bag folders and/or folders of bags.
        config: The ingest mapping.
        dataset_id: Minari id, ``namespace/name-vN``.
        workers: Local parallel processes (default: one per bag, at most the CPU count); 1 runs inline.
        executor: Local processes, or one Ray task per bag on a cluster (bags read where they lie: on a
            multi-node cluster, at the same path on every node, and in shard mode
            ``MINARI_DATASETS_PATH`` too).
        shards: Shard mode; ``None`` (the default) picks it for fleets above :data:`SHARD_ABOVE_BYTES`
            of bag files (:func:`uses_shards`).
        strict: Turn every repair into an error.
        overwrite: Replace an existing dataset with the same id.
        on_bag: Called once per finished bag.

    Returns:
        The dataset folder and the quality report (also written into that folder).

    Raises:
        IngestError: Bad input (a bag, or in shard mode a shard); nothing was written.
        FileExistsError: The dataset exists and ``overwrite`` is false.
    """
    root = datasets_root()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: dataset {dataset_id} already exists; refusing to overwrite it (--overwrite)")
    bags = find_bags(paths)
    env = _eval_env(config)
    workers = workers or min(len(bags), os.cpu_count() or 1)
    # A Ray worker's working directory is not ours: it gets absolute paths.
    bag_paths = [bag.resolve() if executor.kind == "ray" else bag for bag in bags]
    if uses_shards(bags, shards):
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".symgate-ingest-", dir=root))  # removed with every shard in it
        try:
            folders = [(staging / f"shard-{index:06d}").resolve() for index in range(len(bags))]
            shard_items = [
                (str(b), config.model_dump_json(), env, strict, str(f)) for b, f in zip(bag_paths, folders, strict=True)
            ]
            for _ in _run(_shard_in_worker, shard_items, executor, workers, "symgate-ingest-shard"):
                if on_bag:
                    on_bag()
            return merge_shards(folders, config, dataset_id, overwrite=overwrite)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    robot = _robot(config)
    items = [(str(b), config.model_dump_json(), env.action_spec, strict) for b in bag_paths]
    results: list[BagResult] = []

    def bag_episodes() -> Iterator[Episode]:
        for result in _in_order(_run(_process_bag_in_worker, items, executor, workers, "symgate-ingest"), on_bag):
            results.append(result)
            yield from result.episodes

    def fill(storage: Any) -> tuple[dict[str, Any], QualityReport]:
        # Each bag's episodes go into the open HDF5 file, in bag order, as soon as the bags before it are
        # done, while the workers read the later bags: the driver's write overlaps the reading.
        storage.update_episodes(_buffers(bag_episodes()))
        report = _quality_report(dataset_id, config, [r.report for r in results])  # raising here writes nothing
        episodes = [_episode_record(e) for result in results for e in result.episodes]
        return _metadata(config, env, robot, report.bags, episodes), report

    root.mkdir(parents=True, exist_ok=True)
    return final, _write_dataset(root, dataset_id, env, len(bags), fill, overwrite)


def _in_order(finished: Iterable[tuple[int, R]], on_bag: Callable[[], None] | None) -> Iterator[R]:
    """The results of ``(index, result)`` pairs arriving in any order, in index order, each as early as it can be."""
    waiting: dict[int, R] = {}
    following = 0
    for index, result in finished:
        waiting[index] = result
        if on_bag:
            on_bag()
        while following in waiting:
            yield waiting.pop(following)
            following += 1


def _run(
    function: Callable[[T], R], items: list[T], executor: Executor, workers: int, name: str
) -> Iterator[tuple[int, R]]:
    """One task per bag: inline with one local worker, else on the executor (``(index, result)`` as they finish).

    Local workers fork from a forkserver that has imported this module once: with spawn each worker
    re-imported it (about a second of CPU each, paid by both workers at once on a 2-core machine).
    """
    if workers == 1 and executor.kind == "local":
        yield from ((index, function(item)) for index, item in enumerate(items))
    else:
        yield from run_unordered(
            function, items, executor=executor, workers=workers, preload=("pipeline.ingest.dataset",), name=name
        )


def _write_dataset(
    root: Path,
    dataset_id: str,
    env: _EvalEnv,
    bags: int,
    fill: Callable[[Any], tuple[dict[str, Any], QualityReport]],
    overwrite: bool,
) -> QualityReport:
    """Write the Minari dataset ``dataset_id`` under ``root``, atomically; returns its quality report.

    ``bags``: how many bags the episodes come from (for the description). ``fill(storage)`` adds the
    episodes and returns the metadata and the quality report. The metadata goes under the key
    ``symgate``, each episode gets its source span, and the folder the quality report. The dataset is
    built in a staging folder and renamed into place (swapping out an old one with ``overwrite``); if
    ``fill`` raises, nothing is written.
    """
    import minari  # heavy; only needed here

    staging = Path(tempfile.mkdtemp(prefix=".symgate-ingest-", dir=root))  # root must exist (see _write_shard)
    try:
        with _datasets_path(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # minari warns about optional metadata we do not use
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=[],
                eval_env=env.spec,
                observation_space=env.observation_space,
                action_space=env.action_space,
                algorithm_name=f"symgate ingest {__version__}",
                author={"symgate"},
                author_email={"symgate@localhost"},
                code_permalink="https://symgate.invalid/ingest",
                description=f"Ingested from {bags} ROS 2 bags by symgate {__version__}.",
                data_format="hdf5",
            )
            metadata, report = fill(dataset.storage)
            dataset.storage.update_metadata({"symgate": metadata})
            dataset.storage.update_episode_metadata(
                [
                    {key: e[key] for key in ("source_bag", "start_ns", "end_ns", "end_reason")}
                    for e in metadata["episodes"]
                ]
            )
        staged = staging / dataset_id
        atomic_write_json(staged / REPORT_JSON, report.model_dump(mode="json"))
        atomic_write_text(staged / REPORT_MD, report.markdown())
        final = root / dataset_id
        for folder in reversed(Path(dataset_id).parents[:-1]):  # the namespace: inside root, never root itself
            (root / folder).mkdir(exist_ok=True)
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
    return report


# ------------------------------------------------------------------------------------------- shards
#: Above this many bytes of bag files, ``ingest(shards=None)`` (the command line's default) uses shard mode.
SHARD_ABOVE_BYTES = 1 << 30
#: The Minari id of the one-bag dataset inside every shard folder (shards merge into any id).
SHARD_DATASET_ID = "symgate/shard-v0"
#: A Minari HDF5 dataset's one data file (in its ``data`` folder).
MAIN_DATA = "main_data.hdf5"


def uses_shards(bags: Sequence[Path], shards: bool | None) -> bool:
    """Whether ``ingest`` runs in shard mode.

    ``shards`` when set; else whether the bags' files total more than :data:`SHARD_ABOVE_BYTES` (in
    driver mode the driver holds every episode in memory at once).
    """
    if shards is not None:
        return shards
    files = [f for bag in bags for f in ([bag] if bag.is_file() else bag.iterdir()) if f.is_file()]
    return sum(f.stat().st_size for f in files) > SHARD_ABOVE_BYTES


def write_shard(bag: Path, config: IngestConfig, shard: Path, *, strict: bool = False) -> Path:
    """Ingest one bag into a shard: the folder ``shard`` holding the one-bag dataset :data:`SHARD_DATASET_ID`.

    The shard is the dataset that ``ingest`` would write of this bag alone (Minari/HDF5, with its
    metadata and quality report), written atomically; a bag without usable episodes gives a shard with
    none. :func:`merge_shards` joins shards into one dataset. Rewriting a shard replaces it.

    Args:
        bag: One rosbag2 folder or ``.mcap`` file.
        config: The ingest mapping.
        shard: The shard folder.
        strict: Turn every repair into an error.

    Returns:
        The shard folder.

    Raises:
        IngestError: A bad bag; nothing was written.
    """
    env = _eval_env(config)
    shard.parent.mkdir(parents=True, exist_ok=True)
    _write_shard(process_bag(bag, config, _robot(config), env.action_spec, strict), config, env, shard)
    return shard


def _shard_in_worker(item: tuple[str, str, _EvalEnv, bool, str]) -> None:
    bag, config_json, env, strict, shard = item
    config = IngestConfig.model_validate_json(config_json)
    _write_shard(process_bag(Path(bag), config, _robot(config), env.action_spec, strict), config, env, Path(shard))


def _write_shard(result: BagResult, config: IngestConfig, env: _EvalEnv, shard: Path) -> None:
    report = QualityReport(
        dataset_id=SHARD_DATASET_ID,
        ingest_config_sha256=config.sha256(),
        state_topics=sorted({m.topic for m in config.observations.values() if not m.latched}),
        bags=[result.report],
    )
    metadata = _metadata(config, env, _robot(config), [result.report], [_episode_record(e) for e in result.episodes])
    # Only the shard folder itself is created: a task still running after its ingest was abandoned (and
    # its staging folder removed) fails here instead of leaving a stray shard behind.
    shard.mkdir(exist_ok=True)

    def fill(storage: Any) -> tuple[dict[str, Any], QualityReport]:
        storage.update_episodes(_buffers(result.episodes))
        return metadata, report

    # overwrite: a task re-run after its worker died may find the shard its first attempt completed
    _write_dataset(shard, SHARD_DATASET_ID, env, 1, fill, overwrite=True)


@dataclass
class _Shard:
    """A shard as the merge sees it: its folder and data, its bag's report, its episodes' source spans."""

    folder: Path
    data: Path
    report: BagReport
    episodes: list[dict[str, Any]]
    steps: int


def _open_shard(shard: Path, config: IngestConfig, env: _EvalEnv) -> _Shard:
    """Read a shard's report and metadata (not its arrays), checking it against ``config`` and ``env``."""
    from minari.dataset.minari_storage import MinariStorage

    folder = shard / SHARD_DATASET_ID

    def bad(problem: str) -> IngestError:
        return IngestError(shard, f"bad ingest shard: {problem}; nothing written")

    if not (folder / REPORT_JSON).is_file():
        raise bad(f"no {SHARD_DATASET_ID}/{REPORT_JSON} (not a shard, or its task never finished)")
    try:
        report = QualityReport.model_validate_json((folder / REPORT_JSON).read_text(encoding="utf-8"))
        storage = MinariStorage.read(folder / "data")
        metadata = storage.metadata["symgate"]
        total_episodes, total_steps = storage.total_episodes, storage.total_steps
    except (OSError, ValueError, KeyError) as error:
        raise bad(f"unreadable ({type(error).__name__}: {error})") from error
    if len(report.bags) != 1:
        raise bad(f"{REPORT_JSON} reports {len(report.bags)} bags, a shard holds one")
    if metadata.get("ingest_config_sha256") != config.sha256():
        raise bad("ingested with another ingest config (ingest_config_sha256 differs)")
    if storage.observation_space != env.observation_space or storage.action_space != env.action_space:
        raise bad("its observation or action space is not the eval env's")
    kept = [e for e in report.bags[0].episodes if e.kept]
    steps = sum(e.steps for e in kept)
    if not len(kept) == len(metadata["episodes"]) == total_episodes or steps != total_steps:
        raise bad(f"holds {total_episodes} episodes / {total_steps} steps, its report says {len(kept)} / {steps}")
    return _Shard(shard, folder / "data", report.bags[0], metadata["episodes"], total_steps)


def _copy_episodes(storage: Any, shards: list[_Shard]) -> None:
    """Copy every shard's episodes, in shard order, into the (empty) Minari ``storage``, numbered on.

    Each episode is one HDF5 group (Minari's layout: ``episode_<id>`` holding its arrays); it is copied
    as stored (HDF5 object copy, no decoding), so the arrays are the shard's, byte for byte.
    """
    import h5py

    index = 0
    with h5py.File(storage.data_path / MAIN_DATA, "a", track_order=True) as target:
        for shard in shards:
            try:
                with h5py.File(shard.data / MAIN_DATA, "r") as source:
                    for k in range(len(shard.episodes)):
                        source.copy(source[f"episode_{k}"], target, name=f"episode_{index}")
                        target[f"episode_{index}"].attrs["id"] = index
                        index += 1
            except (OSError, KeyError) as error:
                raise IngestError(
                    shard.folder,
                    f"bad ingest shard: unreadable episode ({type(error).__name__}: {error}); nothing written",
                ) from error
    storage.update_metadata({"total_episodes": index, "total_steps": sum(shard.steps for shard in shards)})


def merge_shards(
    shards: Sequence[Path], config: IngestConfig, dataset_id: str, *, overwrite: bool = False
) -> tuple[Path, QualityReport]:
    """Merge shards (:func:`write_shard`) into the Minari dataset ``dataset_id``, atomically.

    Episodes keep the shards' order, and within a shard the bag's order: shards of a fleet's bags in
    ``find_bags`` order give exactly the dataset (arrays, metadata, quality report) that ``ingest``
    writes in driver mode. Every shard is checked before any episode is copied, and the episodes are
    copied one HDF5 group at a time (no decoding), so memory does not grow with the fleet.

    Args:
        shards: Shard folders, in the dataset's order.
        config: The ingest mapping every shard was written with.
        dataset_id: Minari id, ``namespace/name-vN``.
        overwrite: Replace an existing dataset with the same id.

    Returns:
        The dataset folder and the merged quality report (also written into that folder).

    Raises:
        IngestError: A bad shard (missing, unreadable, of another config, inconsistent, a bag twice),
            or no usable episode; nothing was written.
        FileExistsError: The dataset exists and ``overwrite`` is false.
    """
    root = datasets_root()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: dataset {dataset_id} already exists; refusing to overwrite it (--overwrite)")
    env = _eval_env(config)
    opened = [_open_shard(shard, config, env) for shard in shards]
    seen: dict[str, Path] = {}
    for shard, path in zip(opened, shards, strict=True):
        if shard.report.bag in seen:
            raise IngestError(path, f"bad ingest shard: bag {shard.report.bag} is also in {seen[shard.report.bag]}")
        seen[shard.report.bag] = path
    report = _quality_report(dataset_id, config, [shard.report for shard in opened])
    episodes = [episode for shard in opened for episode in shard.episodes]
    metadata = _metadata(config, env, _robot(config), report.bags, episodes)
    root.mkdir(parents=True, exist_ok=True)

    def fill(storage: Any) -> tuple[dict[str, Any], QualityReport]:
        _copy_episodes(storage, opened)
        return metadata, report

    return final, _write_dataset(root, dataset_id, env, len(opened), fill, overwrite)
