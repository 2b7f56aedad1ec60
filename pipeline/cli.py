"""The ``symgate`` command line: one sub-command per pipeline stage, plus ``demo``.

Every command reads its stage's YAML config (``--config``), lets a few flags override it, shows
progress on long work, and turns bad input into a one-line error naming the file and field
(exit code 2) instead of a traceback.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import __version__
from pipeline.executor import LOCAL, Executor, ExecutorError, executor_from_options
from pipeline.fleet import MANIFEST, FleetConfig, FleetManifest, record_fleet
from pipeline.fleet.config import StorageName
from pipeline.gate import (
    CERTIFICATE_FILE,
    REPORT_MD,
    GateConfig,
    GateOutcome,
    RenderOptions,
    planned_episodes,
    run_gate,
)
from pipeline.gate.signing import SIGNING_KEY_ENV, init_keys
from pipeline.ingest import REPORT_MD as INGEST_REPORT_MD
from pipeline.ingest import IngestConfig, QualityReport, find_bags, ingest
from pipeline.ingest.config import config_for_robot
from pipeline.ingest.dataset import uses_shards
from pipeline.io import ConfigError, UserInputError, load_config
from sim import ARM_ENV_ID
from sim.behaviour import RecipeName
from sim.robots.profile import RobotProfileError, load_profile, profile_path

app = typer.Typer(
    name="symgate",
    help="Fleet logs → symmetry-aligned offline RL → ONNX → validation gate → robot.",
    no_args_is_help=True,
    add_completion=False,
)
fleet_app = typer.Typer(help="Simulated robot fleet that logs ROS 2 bags.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")
console = Console()
#: A table name type (``TableName``, ``OfflineTable``) for the ``--table`` choice.
_Table = TypeVar("_Table", bound=str)
#: Help of every command's --robot option.
ROBOT_HELP = "Robot profile: a name under deploy/robots/ or a robot.yaml path (default: the built-in reacher)."
#: --executor and --ray-address, the same on ingest, gate and experiment.
ExecutorOption = Annotated[
    str,
    typer.Option(help="local (process pools on this machine) or ray (a Ray cluster; pip install 'symgate[ray]')."),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --executor ray: the cluster to join (HOST:PORT from `ray start --head`, or auto); "
        "default: a private local cluster."
    ),
]


class _RunByDefault(typer.core.TyperGroup):
    """A command group whose first argument, when it is not one of its commands, goes to ``run``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: typer's (vendored click) Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


ingest_app = typer.Typer(
    cls=_RunByDefault,
    help="ROS 2 bags → Minari dataset: `symgate ingest BAGS...` (= `ingest run`), or `ingest inspect BAGS...`.",
    no_args_is_help=True,
)
app.add_typer(ingest_app, name="ingest")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Report bad input, or a Ray task lost past its retries, as one red line and exit 2; bugs raise."""
    try:
        yield
    except (UserInputError, RobotProfileError, FileExistsError, FileNotFoundError, ExecutorError) as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)  # never break paths across lines
        raise typer.Exit(2) from error


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[..., None]]:
    """A progress bar; the yielded ``advance(n=1)`` moves it n steps."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda steps=1: progress.advance(task, steps)


def _fleet_table(manifest: FleetManifest, out: Path) -> Table:
    topics = manifest.config.topics
    table = Table(title=f"Fleet written to {out}")
    for column in ("bag", "joint order", "success", "span", topics.joint_states, topics.joint_commands, "KiB"):
        table.add_column(column, justify="left" if column in ("bag", "joint order") else "right")
    for session in manifest.sessions:
        size = sum(f.stat().st_size for f in (out / session.robot).iterdir())
        successes = sum(e.success for e in session.episodes)
        table.add_row(
            f"{session.robot}.{session.storage}",
            ",".join(session.joint_order),
            f"{successes}/{len(session.episodes)}",
            f"{(session.end_ns - session.start_ns) / 1e9:.1f} s",
            str(session.message_counts.get(topics.joint_states, 0)),
            str(session.message_counts.get(topics.joint_commands, 0)),
            f"{size / 1024:.0f}",
        )
    return table


def _record(config: FleetConfig, out: Path, workers: int | None, overwrite: bool) -> FleetManifest:
    with _progress(f"Recording {config.robots} robots", config.robots * config.episodes) as advance:
        manifest = record_fleet(config, out, workers=workers, overwrite=overwrite, on_episode=advance)
    console.print(_fleet_table(manifest, out))
    console.print(f"Manifest: {out / MANIFEST}")
    return manifest


@fleet_app.command("record")
def fleet_record(
    out: Annotated[Path, typer.Option(help="Output folder: one bag per robot plus fleet.json.")],
    config: Annotated[Path | None, typer.Option(help="Fleet config YAML (default: built-in defaults).")] = None,
    robots: Annotated[int | None, typer.Option(min=1, help="Number of robots (one bag each).")] = None,
    episodes: Annotated[int | None, typer.Option(min=1, help="Episodes per robot.")] = None,
    recipe: Annotated[RecipeName | None, typer.Option(help="Behaviour recipe.")] = None,
    storage: Annotated[StorageName | None, typer.Option(help="rosbag2 storage plugin.")] = None,
    discrete: Annotated[bool | None, typer.Option(help="Use the 9 discrete torque actions.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Fleet seed.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Parallel processes (default: one per robot).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    robot: Annotated[str | None, typer.Option(help=ROBOT_HELP)] = None,
) -> None:
    """Simulate N robots in parallel and write one ROS 2 bag per robot session."""
    with _user_errors():
        base = load_config(config, FleetConfig) if config else FleetConfig()
        overrides: dict[str, Any] = {
            key: value
            for key, value in {
                "robots": robots,
                "episodes": episodes,
                "recipe": recipe,
                "storage": storage,
                "discrete": discrete,
                "seed": seed,
                "robot": robot,
            }.items()
            if value is not None
        }
        fleet = FleetConfig.model_validate({**base.model_dump(), **overrides})
        _record(fleet, out, workers, overwrite)


def _ingest(
    bags: list[Path],
    config: IngestConfig,
    dataset_id: str,
    workers: int | None,
    strict: bool,
    overwrite: bool,
    executor: Executor = LOCAL,
    shards: bool | None = None,
) -> QualityReport:
    bag_folders = find_bags(bags)
    sharded = uses_shards(bag_folders, shards)
    mode = " (shard mode: one shard per bag, merged)" if sharded else ""
    with _progress(f"Ingesting {len(bag_folders)} bags into {dataset_id}{mode}", len(bag_folders)) as advance:
        folder, report = ingest(
            bag_folders,
            config,
            dataset_id,
            workers=workers,
            executor=executor,
            shards=sharded,
            strict=strict,
            overwrite=overwrite,
            on_bag=advance,
        )
    console.print(Markdown(report.markdown()))
    console.print(f"Dataset: {folder}  (report: {folder / INGEST_REPORT_MD})")
    return report


@ingest_app.command("run")
def ingest_command(
    bags: Annotated[list[Path], typer.Argument(help="Bag folders, bare .mcap files, or folders of them.")],
    config: Annotated[
        Path | None, typer.Option(help="Ingest mapping YAML (default: built-in reacher mapping).")
    ] = None,
    dataset_id: Annotated[
        str | None,
        typer.Option(help="Minari dataset id, namespace/name-vN (default: symgate/<robot>-fleet-v0)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Parallel processes (default: one per bag).")] = None,
    strict: Annotated[bool, typer.Option(help="Refuse any bag that needs a repair.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset with the same id.")] = False,
    robot: Annotated[
        str | None, typer.Option(help=ROBOT_HELP + " Without --config: the profile's default mapping.")
    ] = None,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    shards: Annotated[
        bool | None,
        typer.Option(
            "--shards/--no-shards",
            help="Each task writes its bag as a dataset shard and the driver merges them (same dataset, "
            "driver memory flat in the fleet size). Default: shards above 1 GiB of bags.",
        ),
    ] = None,
) -> None:
    """Turn ROS 2 bags into a Minari dataset (in $MINARI_DATASETS_PATH) with a quality report."""
    with _user_errors():
        run_on = executor_from_options(executor, ray_address)
        if config is not None:
            mapping = load_config(config, IngestConfig)
            if robot is not None:
                mapping = IngestConfig.model_validate({**mapping.model_dump(), "robot": robot, "env_id": ARM_ENV_ID})
        else:
            mapping = config_for_robot(robot) if robot is not None else IngestConfig()
        name = "reacher" if robot is None else Path(robot).stem if robot.endswith((".yaml", ".yml")) else robot
        _ingest(bags, mapping, dataset_id or f"symgate/{name}-fleet-v0", workers, strict, overwrite, run_on, shards)


@ingest_app.command("inspect")
def ingest_inspect_command(
    bags: Annotated[list[Path], typer.Argument(help="Bag folders, bare .mcap files, or folders of them.")],
    draft: Annotated[Path, typer.Option(help="Where to write the draft mapping YAML.")] = Path("ingest-draft.yaml"),
    robot: Annotated[
        str | None,
        typer.Option(help="The robot profile the bags come from: the draft takes its joints, rate and task."),
    ] = None,
) -> None:
    """Show what bags hold (topics, rates, gaps, joints, clocks) and write a draft mapping to edit."""
    from pipeline.ingest.inspect import draft_mapping, inspect_bag
    from pipeline.io import atomic_write_text
    from sim.robots.profile import load_profile

    with _user_errors():
        profile = load_profile(robot) if robot is not None else None
        summaries = [inspect_bag(bag) for bag in find_bags(bags)]
        for summary in summaries:
            table = Table(title=f"{summary.bag} ({summary.duration_s:.1f} s)")
            for column in ("topic", "type", "messages", "rate", "largest gap", "log − header (min/median/max)"):
                table.add_column(column, overflow="fold")
            for topic in summary.topics:
                offset = topic.header_offset_s
                table.add_row(
                    topic.topic,
                    topic.msgtype if topic.decodable else f"{topic.msgtype} (cannot decode: ignored unless mapped)",
                    str(topic.messages),
                    f"{topic.rate_hz:.1f} Hz",
                    f"{topic.largest_gap_s:.3f} s",
                    "–" if offset is None else " / ".join(f"{x * 1e3:+.1f}" for x in offset) + " ms",
                )
            console.print(table)
            for topic in summary.topics:
                for names in topic.joint_names:
                    joints = ", ".join(names) or "(empty name array: give joint_order)"
                    console.print(f"joints on {topic.topic}: {joints}", soft_wrap=True)
        atomic_write_text(draft, draft_mapping(summaries, profile, robot))
        console.print(f"Draft mapping: {draft} (edit it, then `symgate ingest BAGS --config {draft}`)", soft_wrap=True)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes (replaced on each run).")] = Path(
        "demo_out"
    ),
    robot: Annotated[str | None, typer.Option(help=ROBOT_HELP)] = None,
) -> None:
    """Run every pipeline stage that exists on its built-in defaults, writing everything under OUT."""
    os.environ["MINARI_DATASETS_PATH"] = str((out / "datasets").resolve())
    with _user_errors():
        name = "reacher" if robot is None else Path(robot).stem if robot.endswith((".yaml", ".yml")) else robot
        dataset_id = f"symgate/{name}-fleet-v0"
        console.rule("[bold]symgate demo[/] · stage 1: simulated fleet → ROS 2 bags")
        _record(FleetConfig(robot=robot), out / "fleet", workers=None, overwrite=True)
        console.rule("[bold]stage 2: ROS 2 bags → Minari dataset")
        mapping = config_for_robot(robot) if robot is not None else IngestConfig()
        _ingest([out / "fleet"], mapping, dataset_id, None, strict=False, overwrite=True)
        console.rule("[bold]stage 3: Minari dataset → IQL policies: no augmentation, DAC-Output, canonical")
        with _one_torch_thread():
            _demo_training(out / "runs", dataset_id, robot)
        console.rule("[bold]stage 4: export to ONNX and gate on held-out rotations")
        private_key, public_key = _demo_keys(out / "keys")
        certified = _demo_gate(out / "runs", out / "models", private_key)
        console.rule("[bold]stage 5: serve the certified policy to the simulated robot over ROS 2")
        for model in certified:
            outcome = _serve_sim(model, [public_key], "test", 10, 1.0, model / "serve_sim.json", robot)
            console.print(_serve_table(outcome, model))


DEMO_STRATEGIES = ("none", "dac-output", "canonical")
#: Gradient updates of each demo policy on the built-in reacher.
DEMO_STEPS = 5000
#: ... and on a robot profile, whose reach features run the URDF chain's forward kinematics inside
#: every network (~30 ms an update on the iiwa against ~4 ms). On the iiwa, 1500 updates give the same
#: verdicts as 5000 (none fails at 0.57 held-out, dac-output and canonical pass at 1.00, both reach
#: 10/10 over ROS 2) and the whole demo takes 5 min instead of 24 (measured 2026-12-01, shared VM).
DEMO_PROFILE_STEPS = 1500


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for the block.

    The demo's networks are small: on a shared 2-core machine, two threads contending with other
    processes made 100 iiwa IQL updates take 53-93 s instead of 9-12 s (measured 2026-12-01, load
    average 7-9).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _demo_training(runs: Path, dataset_id: str, robot: str | None = None) -> None:
    """Train IQL without augmentation, with DAC-Output and canonical; compare them on rotations never in the data."""
    import shutil

    from pipeline.train import TrainConfig, train

    table = Table(title="IQL on data from one context, evaluated on held-out rotations")
    for column in ("strategy", "equivariance error (SO(2))", "success, train contexts", "success, held-out"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for strategy in DEMO_STRATEGIES:
        settings: dict[str, Any] = {
            "steps": DEMO_STEPS if robot is None else DEMO_PROFILE_STEPS,
            "log_every": 500,
            "augmentation": {"strategy": strategy},
            "evaluation": {"episodes": 20},
        }
        if robot is not None:
            settings.update(robot=robot, features="reach")
        config = TrainConfig.model_validate(settings)
        shutil.rmtree(runs / strategy, ignore_errors=True)  # a fresh dataset each demo: never resume an old run
        with _progress(f"IQL, {strategy}", config.steps) as advance:
            done = [0]

            def progress(step: int, record: dict[str, Any], done: list[int] = done, advance: Any = advance) -> None:
                advance(step - done[0])
                done[0] = step

            summary = train(config, dataset_id, runs / strategy, on_progress=progress)
        evaluation = summary["evaluation"]
        table.add_row(
            strategy,
            f"{summary['equivariance_error'][0]:.3g}",
            f"{evaluation['train']['success'][0]:.0%}",
            f"{evaluation['test']['success'][0]:.0%}",
        )
    console.print(table)
    console.print(f"Runs: {runs} (metrics.jsonl, TensorBoard, checkpoints, summary.json)")


def _demo_keys(directory: Path) -> tuple[Path, Path]:
    """A throw-away signing key pair for the demo's gate (a fresh one each run; never use it for a robot)."""
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    private, public = init_keys(directory)
    console.print(
        f"[bold yellow]Throw-away demo signing key[/] (new each run, for this demo only): {private}; the simulated "
        f"robot trusts only {public}. Real deployments: `symgate keys init` once, keep the private key off robots.",
        soft_wrap=True,
    )
    return private, public


def _demo_gate(runs: Path, models: Path, signing_key: Path) -> list[Path]:
    """Export every demo policy to ONNX and gate it, signing the passes; returns the certified model folders."""
    from pipeline.export.export import export_run

    config = GateConfig()
    certified: list[Path] = []
    verdicts = Table(title="Validation gate on 100 held-out rotations (ONNX Runtime in PyBullet)")
    for column in ("strategy", "held-out success [95% CI]", "train", "gap", "randomised", "verdict"):
        verdicts.add_column(column, justify="left" if column == "strategy" else "right", no_wrap=True)
    for strategy in DEMO_STRATEGIES:
        export_run(runs / strategy, models / strategy, overwrite=True)
        report = _run_gate(models / strategy, config, workers=None, report_dir=None, signing_key=signing_key).report
        success = {suite.name: suite.success for suite in report.suites}
        colour = "green" if report.verdict == "pass" else "red"
        verdicts.add_row(
            strategy,
            success["test"].text() if "test" in success else "n/a",
            success["train"].text(ci=False) if "train" in success else "n/a",
            report.success_gap.text(ci=False) if report.success_gap else "n/a",
            success["test-randomized"].text(ci=False) if "test-randomized" in success else "n/a",
            f"[bold {colour}]{report.verdict.upper()}[/]",
        )
        if report.verdict == "pass":
            certified.append(models / strategy)
    console.print(verdicts)
    console.print(
        f"Models, gate reports and certificates: {models}/<strategy>/ (gate_report.md, plots)", soft_wrap=True
    )
    return certified


# ----------------------------------------------------------------------------- symmetry
symmetry_app = typer.Typer(help="Symmetry specs: check them against datasets.", no_args_is_help=True)
app.add_typer(symmetry_app, name="symmetry")


@symmetry_app.command("check")
def symmetry_check(
    dataset: Annotated[str, typer.Option(help="Minari dataset id made by `symgate ingest`.")],
    spec: Annotated[
        Path | None,
        typer.Option(help="Symmetry spec YAML (e.g. deploy/symmetry/reacher.yaml); default: the --robot profile's."),
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Transitions sampled for the dynamics check.")] = 256,
    group_draws: Annotated[int, typer.Option(min=1, help="Group elements per transition, reward check.")] = 8,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the transition and group-element draws.")] = 0,
    max_residual_ratio: Annotated[
        float, typer.Option(min=1.0, help="Fail when a field's dynamics residual exceeds this × its baseline.")
    ] = 10.0,
    max_reward_flip_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fail when more rewards than this fraction change under g.")
    ] = 0.0,
    out: Annotated[
        Path | None,
        typer.Option(help="JSON report (default: symmetry_check-<spec name>.json in the dataset folder)."),
    ] = None,
    robot: Annotated[
        str | None, typer.Option(help=ROBOT_HELP + " Checks its symmetry spec (written or derived).")
    ] = None,
) -> None:
    """Check that a dataset's rewards and its simulator's dynamics respect a symmetry spec (exit 1 if not)."""
    from models.symmetry import SymmetrySpec
    from pipeline.ingest import datasets_root
    from pipeline.io import atomic_write_json
    from pipeline.symmetry import CheckTolerances, check_symmetry, load_symmetry_spec, report_table
    from sim.robots.profile import load_profile

    with _user_errors():
        if spec is None and robot is None:
            raise ConfigError("give --spec FILE or --robot NAME (whose profile holds the symmetry spec)")
        if spec is not None:
            symmetry = load_symmetry_spec(spec)
            name = spec.stem
        else:
            assert robot is not None
            symmetry = SymmetrySpec.model_validate(load_profile(robot).symmetry_spec())
            name = Path(robot).stem if robot.endswith((".yaml", ".yml")) else robot
        tolerances = CheckTolerances(
            max_residual_ratio=max_residual_ratio, max_reward_flip_fraction=max_reward_flip_fraction
        )
        report = check_symmetry(
            symmetry, dataset, samples=samples, group_draws=group_draws, seed=seed, tolerances=tolerances
        )
        path = out or datasets_root() / dataset / f"symmetry_check-{name}.json"
        atomic_write_json(path, report.model_dump(mode="json"))
    console.print(report_table(report))
    for violation in report.violations:
        console.print(f"[bold red]violation:[/] {violation}", soft_wrap=True)
    console.print(f"Report: {path}", soft_wrap=True)
    if not report.passed:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- robots
robots_app = typer.Typer(help="Robot profiles (deploy/robots/<name>/robot.yaml).", no_args_is_help=True)
app.add_typer(robots_app, name="robots")


@robots_app.command("list")
def robots_list() -> None:
    """List the robot profiles under deploy/robots/ (checked against their URDFs)."""
    from sim.robots.profile import list_profiles, load_profile

    table = Table("robot", "joints", "action", "rates (control/physics Hz)", "end effector", "description")
    with _user_errors():
        for name in list_profiles():
            robot = load_profile(name)
            p = robot.profile
            table.add_row(
                name,
                str(len(p.joints)),
                p.action.interface,
                f"{p.control_hz}/{p.physics_hz}",
                p.task.end_effector,
                p.description,
            )
    console.print(table)


@robots_app.command("show")
def robots_show(
    robot: Annotated[str, typer.Argument(help="Profile name (deploy/robots/<name>) or path to a robot.yaml.")],
) -> None:
    """Print a robot profile: URDF, joints with their effective limits, task, contexts and symmetry."""
    import yaml

    from sim.robots.profile import load_profile

    with _user_errors():
        loaded = load_profile(robot)
        spec = loaded.symmetry_spec()
    p = loaded.profile
    console.print(f"[bold]{p.name}[/]: {p.description}", soft_wrap=True)
    console.print(f"profile: {loaded.source}\nURDF: {loaded.urdf_path}\nbase link: {p.base_link}", soft_wrap=True)
    console.print(
        f"action: {p.action.interface} targets at {p.control_hz} Hz, physics {p.physics_hz} Hz "
        f"({p.action_repeat} steps per command)"
    )
    table = Table("joint", "type", "lower", "upper", "velocity", "effort")
    for limit in loaded.limits:
        kind = "continuous" if limit.continuous else ("revolute" if limit.angular else "prismatic")
        table.add_row(
            limit.name, kind, f"{limit.lower:.4g}", f"{limit.upper:.4g}", f"{limit.velocity:.4g}", f"{limit.effort:.4g}"
        )
    console.print(table)
    task = p.task
    console.print(
        f"task: reach with {task.end_effector} (features: {', '.join(task.feature_links) or 'none'}), goal radius "
        f"{task.goal.radius} m, height {task.goal.height} m, success within {task.success_radius} m, "
        f"{task.max_episode_steps} steps",
        soft_wrap=True,
    )
    console.print(
        f"contexts: train {list(p.contexts.train_deg)}°, sector {list(p.contexts.sector_deg)}°, "
        f"{p.contexts.test_count} test, {p.contexts.validation_count} validation",
        soft_wrap=True,
    )
    console.print(f"symmetry ({'derived' if p.symmetry == 'derived' else 'written'}):")
    console.print(yaml.safe_dump(spec, sort_keys=False).rstrip(), soft_wrap=True, markup=False)


# ----------------------------------------------------------------------------- train
@app.command("train")
def train_command(
    dataset: Annotated[str, typer.Option(help="Minari dataset id (in $MINARI_DATASETS_PATH).")],
    out: Annotated[Path, typer.Option(help="Run folder; an interrupted run in it is resumed.")],
    config: Annotated[Path | None, typer.Option(help="Training config YAML (deploy/train/*.yaml).")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Agents trained as one vectorised model.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Gradient updates.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any config field: dotted.key=value (repeatable).")
    ] = None,
    robot: Annotated[
        str | None, typer.Option(help=ROBOT_HELP + " Its FK features (features: reach) and symmetry spec.")
    ] = None,
) -> None:
    """Train IQL, CQL or BC with the symmetry imposed (DA variants or canonical inputs); CPU or CUDA."""
    from pipeline.train import TrainConfig, TrainingDivergedError, train, with_overrides

    with _user_errors():
        base = load_config(config, TrainConfig) if config else TrainConfig()
        flags = {"seeds": seeds, "steps": steps, "device": device, "robot": robot}
        if robot is not None and base.features == "reacher":
            flags["features"] = "reach"
        overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + list(set_ or [])
        try:
            resolved = with_overrides(base, overrides)
        except ValueError as error:
            raise ConfigError(f"--set: {error}") from error
        console.print(f"Training {resolved.algorithm} / {resolved.augmentation.strategy} on {dataset} → {out}")
        with _progress(f"{resolved.algorithm} × {resolved.seeds} seeds", resolved.steps) as advance:
            done = [0]

            def progress(step: int, record: dict[str, Any]) -> None:
                advance(step - done[0])
                done[0] = step

            try:
                summary = train(resolved, dataset, out, on_progress=progress)
            except TrainingDivergedError as error:
                console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
                raise typer.Exit(3) from error
    table = Table(title=f"{out} (summary.json)")
    for column in ("metric", "mean over seeds", "per seed"):
        table.add_column(column)
    for name in ("equivariance_error", "q_invariance_error", "pessimism"):
        if name not in summary:
            continue
        values = summary[name]
        table.add_row(name, f"{sum(values) / len(values):.4g}", ", ".join(f"{v:.3g}" for v in values[:8]))
    console.print(table)


# ----------------------------------------------------------------------------- export
@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished `symgate train` run folder.")],
    out: Annotated[Path, typer.Option(help="Model folder to create: policy.onnx + contract.json.")],
    seed: Annotated[int, typer.Option(min=0, help="Which seed (ensemble member) of the run to export.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model folder.")] = False,
) -> None:
    """Export a trained policy to one ONNX file with its contract; refuses unless ONNX Runtime matches torch."""
    from pipeline.export.export import export_run

    with _user_errors():
        contract = export_run(run_dir, out, member=seed, overwrite=overwrite)
    assert contract.parity is not None and contract.equivariance is not None
    table = Table(title=f"{out} ({contract.algorithm}, {contract.strategy}, seed {contract.seed})")
    table.add_column("check")
    table.add_column("result", justify="right")
    table.add_row("input", ", ".join(f"{i.name}{list(i.shape)}" for i in contract.inputs))
    table.add_row("signals in it", ", ".join(f"{s.name} ({len(s.components)}, {s.unit})" for s in contract.signals))
    table.add_row("output", ", ".join(f"{o.name}{list(o.shape)}" for o in contract.outputs))
    table.add_row(f"parity on {contract.parity.states} states (max |Δ|)", f"{contract.parity.max_abs_diff:.2e}")
    table.add_row("equivariance error, random rotations (mean)", f"{contract.equivariance.mean_error:.3g}")
    table.add_row("onnx sha256", contract.onnx_sha256[:16] + "…")
    console.print(table)


# ----------------------------------------------------------------------------- gate
def _gate_table(outcome: GateOutcome) -> Table:
    report = outcome.report
    colour = "green" if report.verdict == "pass" else "red"
    table = Table(title=f"Gate: [bold {colour}]{report.verdict.upper()}[/] · {report.model.model_dir}")
    for column in ("suite", "n", "success [95% CI]", "return", "to goal s", "NaN"):
        table.add_column(column, justify="left" if column == "suite" else "right", no_wrap=True)
    for suite in report.suites:
        table.add_row(
            suite.name,
            str(suite.episodes),
            suite.success.text(),
            suite.normalised_return.text(3, ci=False),
            suite.time_to_goal_s.text(ci=False),
            str(suite.non_finite_actions),
        )
    if report.success_gap is not None:
        table.caption = f"generalisation gap (success, train - held-out): {report.success_gap.text()}"
    return table


def _run_gate(
    model_dir: Path,
    config: GateConfig,
    workers: int | None,
    report_dir: Path | None,
    signing_key: Path | None,
    render: bool = True,
    record: bool = False,
    executor: Executor = LOCAL,
) -> GateOutcome:
    with _progress(f"Gating {model_dir.name}", planned_episodes(config)) as advance:
        outcome = run_gate(
            model_dir, config, workers=workers, executor=executor, report_dir=report_dir, signing_key=signing_key,
            on_episodes=advance, render=RenderOptions() if render else None, record=record,
        )  # fmt: skip
    console.print(_gate_table(outcome))
    for reason in outcome.report.reasons:
        console.print(f"[bold red]fail:[/] {reason}", soft_wrap=True)
    console.print(f"Report: {outcome.report_dir / REPORT_MD}", soft_wrap=True)
    if outcome.report.rendering is not None:
        r = outcome.report.rendering
        console.print(
            f"Clips: {len(outcome.report.clips)} ({r.frames} frames, {r.bytes / 1e6:.2f} MB, {r.wall_time_s:.1f} s)"
        )
    if outcome.report.recording is not None:
        console.print(f"Recording (MCAP, Foxglove): {outcome.report_dir / outcome.report.recording}", soft_wrap=True)
    if outcome.certificate is not None:
        console.print(
            f"Certificate {outcome.certificate.certificate_id[:16]}…: {model_dir / CERTIFICATE_FILE}", soft_wrap=True
        )
        if outcome.signature is None:
            console.print(
                f"[bold yellow]warning:[/] the certificate is NOT signed (no --signing-key or ${SIGNING_KEY_ENV}): "
                "robots refuse it",
                soft_wrap=True,
            )
        else:
            console.print(f"Signed (OpenSSF model signing): {outcome.signature}", soft_wrap=True)
    return outcome


@app.command("gate")
def gate_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder made by `symgate export`.")],
    config: Annotated[Path | None, typer.Option(help="Gate config YAML (deploy/gate/reacher.yaml).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: one per core).")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="Where the report goes (default: MODEL_DIR).")] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(envvar=SIGNING_KEY_ENV, help="The gate's private key (symgate keys init): sign a passed model."),
    ] = None,
    robot: Annotated[
        str | None,
        typer.Option(help=ROBOT_HELP + " Default: the model contract's robot; a mismatch with the contract fails."),
    ] = None,
    render: Annotated[
        bool, typer.Option("--render/--no-render", help="Replay chosen episodes into GIF clips in the report.")
    ] = True,
    record: Annotated[
        bool, typer.Option("--record", help="Also write those episodes as gate_episodes.mcap (opens in Foxglove).")
    ] = False,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Run the ONNX policy in PyBullet on train and held-out contexts; exit 0 and certify on pass, exit 1 on fail."""
    with _user_errors():
        run_on = executor_from_options(executor, ray_address)
        gate_config = (load_config(config, GateConfig) if config else GateConfig()).for_robot(robot)
        outcome = _run_gate(model_dir, gate_config, workers, report_dir, signing_key, render, record, run_on)
    if outcome.report.verdict != "pass":
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- keys
keys_app = typer.Typer(help="The gate's signing key pair.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    directory: Annotated[Path, typer.Option("--dir", help="Where the key pair goes.")] = Path("keys"),
) -> None:
    """Create the gate's P-256 key pair: the private key (mode 0600) signs, the public key goes to robots."""
    with _user_errors():
        private, public = init_keys(directory)
    console.print(
        f"Private key (mode 0600, keep it secret; symgate gate --signing-key / ${SIGNING_KEY_ENV}): {private}"
    )
    console.print(f"Public key (put it in each robot's trusted_keys): {public}", soft_wrap=True)


# ----------------------------------------------------------------------------- serve
def _serve_sim(
    model: Path,
    trusted_keys: list[Path],
    contexts: str,
    count: int,
    speedup: float,
    out: Path,
    robot: str | None = None,
    record: Path | None = None,
) -> dict[str, Any]:
    """Run ``pipeline.serve.launch`` in the ROS venv; returns its outcome (also written to ``out``).

    ``robot`` (a profile name or path) is the robot ``sim_robot`` simulates and the node checks the
    contract against; None: the contract's. ``record``: an MCAP file the run's topics are recorded into.
    """
    import json
    import subprocess

    from pipeline.serve import ROS_PYTHON, in_ros_environment

    if not ROS_PYTHON.exists():
        raise UserInputError(f"{ROS_PYTHON}: no ROS environment; create it with `make ros-venv`")
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    args = ["-m", "pipeline.serve.launch", "--model", str(model.resolve()), "--contexts", contexts]
    args += ["--count", str(count), "--speedup", str(speedup), "--out", str(out)]
    args += [arg for key in trusted_keys for arg in ("--trusted-key", str(key.resolve()))]
    if robot is not None:
        args += ["--robot", str(profile_path(robot).resolve())]
    args += ["--record", str(record.resolve())] if record else []
    command, env, isolated = in_ros_environment(args)
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise UserInputError(f"the ROS rehearsal failed (log: {log}): " + " | ".join(tail))
    outcome: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    outcome["isolated_network"] = isolated
    return outcome


def _serve_table(outcome: dict[str, Any], model: Path) -> Table:
    episodes = outcome["episodes"]
    latency = outcome["obs_to_command_ms"] or {"p50": float("nan"), "p99": float("nan")}
    diagnostics = outcome["diagnostics"]
    table = Table(title=f"Closed loop over ROS 2: sim_robot ⇄ policy_server ({model.name})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("success (held-out goals)", f"{sum(e['success'] for e in episodes)}/{len(episodes)}")
    table.add_row("control rate", f"{outcome['control_hz']:g} Hz")
    table.add_row("JointState → command, p50 / p99", f"{latency['p50']:.2f} / {latency['p99']:.2f} ms")
    table.add_row(
        "inference p50 / p99",
        f"{diagnostics.get('inference_p50_us', 'n/a')} / {diagnostics.get('inference_p99_us', 'n/a')} µs",
    )
    table.add_row("loop jitter (std)", f"{diagnostics.get('period_jitter_std_us', 'n/a')} µs")
    table.add_row(
        "late / skipped ticks", f"{diagnostics.get('overruns', 'n/a')} / {diagnostics.get('skipped_ticks', 'n/a')}"
    )
    table.add_row("certificate", diagnostics.get("certificate_id", "n/a")[:16])
    table.add_row("network", "private namespace (loopback only)" if outcome["isolated_network"] else "localhost DDS")
    return table


@app.command("serve")
def serve_command(
    model: Annotated[Path, typer.Option(help="A certified model folder (symgate export + symgate gate).")],
    sim: Annotated[bool, typer.Option("--sim", help="Serve the simulated robot (sim_robot) over ROS 2.")] = False,
    contexts: Annotated[
        str, typer.Option(help="Context set the simulated robot runs: train, test, validation.")
    ] = "test",
    count: Annotated[int, typer.Option(min=1, help="Episodes: the first N contexts of the set.")] = 10,
    speedup: Annotated[float, typer.Option(min=0.1, help="Simulated seconds per wall-clock second.")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="Outcome JSON (default: MODEL/serve_sim.json).")] = None,
    trusted_key: Annotated[
        list[Path] | None, typer.Option(help="A public key the node trusts (symgate keys init; repeatable).")
    ] = None,
    robot: Annotated[
        str | None,
        typer.Option(
            help=ROBOT_HELP + " The robot sim_robot simulates; default: the model contract's. The node refuses a "
            "contract that does not fit it."
        ),
    ] = None,
    record: Annotated[
        Path | None, typer.Option(help="Record the run's ROS 2 topics into this MCAP file (opens in Foxglove).")
    ] = None,
) -> None:
    """Serve a certified policy with the real ROS 2 node; --sim closes the loop with the PyBullet robot."""
    with _user_errors():
        if not sim:
            raise UserInputError(
                "only --sim runs here; on a robot, colcon build ros_nodes/ and see deploy/ros/README.md"
            )
        if robot is not None:
            load_profile(robot)  # a bad profile is named here, before any ROS process starts
        outcome = _serve_sim(
            model, trusted_key or [], contexts, count, speedup, out or model / "serve_sim.json", robot, record
        )
    console.print(_serve_table(outcome, model))
    if record:
        console.print(f"Recording (MCAP, Foxglove): {record}", soft_wrap=True)


# ----------------------------------------------------------------------------- experiments
experiment_app = typer.Typer(help="Reproduce the paper's experiments on our reacher.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


#: ``--max-hours`` of the experiment commands.
MaxHoursOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Start no dataset build or training job after this many hours; rerun the same command to go on "
        "(finished jobs are reused).",
    ),
]


def _experiment_runner(
    quick: bool,
    config: Path | None,
    seeds: int | None,
    device: str,
    workers: int | None,
    out: Path,
    results: Path,
    executor: str,
    ray_address: str | None,
    max_hours: float | None,
) -> Any:
    """The :class:`~pipeline.experiment.Runner` the options describe (options checked here)."""
    from pipeline import REPO
    from pipeline.experiment import ExperimentConfig, Runner

    run_on = executor_from_options(executor, ray_address)
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device}: expected auto, cpu or cuda")
    path = config or REPO / "deploy" / "experiment" / ("paper-quick.yaml" if quick else "paper.yaml")
    experiment = load_config(path, ExperimentConfig)
    if seeds is not None:
        experiment = experiment.model_copy(update={"seeds": seeds, "distillation_seeds": seeds})
    return Runner(
        experiment,
        mode="quick" if quick else "full",
        work=out,
        results=results,
        workers=workers or os.cpu_count() or 1,
        device=device,
        progress=_progress,
        executor=run_on,
        stop_after=None if max_hours is None else max_hours * 3600.0,
    )


def _chosen_tables(table: str, allowed: tuple[_Table, ...]) -> tuple[_Table, ...]:
    """The tables ``--table`` names: one of ``allowed``, or ``all`` of them."""
    if table == "all":
        return allowed
    for name in allowed:
        if name == table:
            return (name,)
    raise ConfigError(f"--table {table}: expected one of {', '.join(allowed)} or all")


def _stopped(stop: Any, runner: Any) -> None:
    console.print(
        f"Table {stop.table}: stopped by --max-hours with {stop.left} left ({len(runner.trained)} job(s) trained "
        f"now, {len(runner.reused)} reused); rerun the same command to continue.",
        soft_wrap=True,
    )


@experiment_app.command("paper")
def experiment_paper(
    table: Annotated[
        str, typer.Option(help="2 (IQL), 7 (CQL), 1 (distillation), 2c (continuous IQL), 8 (critic-only DA) or all.")
    ] = "all",
    seeds: Annotated[int | None, typer.Option(min=2, help="Override the seed count (Table 1's too).")] = None,
    quick: Annotated[
        bool, typer.Option(help="3 seeds and fewer updates (deploy/experiment/paper-quick.yaml).")
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML (default: deploy/experiment/paper[-quick].yaml).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")] = "auto",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Parallel worker processes (default: one per CPU core).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Work folder: bags, datasets, runs (reused by reruns).")] = Path(
        "experiments_out"
    ),
    results: Annotated[Path, typer.Option(help="Tables go to RESULTS/quick or RESULTS/full.")] = Path("results"),
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    max_hours: MaxHoursOption = None,
) -> None:
    """Rerun the paper's protocol (arXiv 2607.02288) and write our numbers beside the paper's.

    Reruns with the same --out skip every dataset and training job already computed with the same config.
    """
    from pipeline.experiment import TABLES
    from pipeline.experiment.runner import TimeBudgetError

    with _user_errors():
        chosen = _chosen_tables(table, TABLES)
        runner = _experiment_runner(
            quick, config, seeds, device, workers, out, results, executor, ray_address, max_hours
        )
        for name in chosen:
            console.rule(f"[bold]Table {name}")
            started = time.perf_counter()
            try:
                markdown = runner.run(name)
            except TimeBudgetError as stop:
                _stopped(stop, runner)
                return
            console.print(Markdown(markdown.read_text(encoding="utf-8").split("\n\n![")[0]))
            console.print(
                f"Table {name}: {markdown} ({(time.perf_counter() - started) / 60:.1f} min; "
                f"{len(runner.trained)} job(s) trained, {len(runner.reused)} reused)",
                soft_wrap=True,
            )


@experiment_app.command("tune-lambda")
def experiment_tune_lambda(
    table: Annotated[str, typer.Option(help="2 (IQL), 7 (CQL) or all.")] = "all",
    seeds: Annotated[int | None, typer.Option(min=2, help="Override the seed count.")] = None,
    quick: Annotated[
        bool, typer.Option(help="3 seeds and fewer updates (deploy/experiment/paper-quick.yaml).")
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML (default: deploy/experiment/paper[-quick].yaml).")
    ] = None,
    presets: Annotated[
        Path | None, typer.Option(help="Folder of the paper-{iql,cql}-*.yaml presets to tune (default: deploy/train).")
    ] = None,
    write: Annotated[bool, typer.Option(help="Write the chosen λ into the presets (else only the record).")] = True,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")] = "auto",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Parallel worker processes (default: one per CPU core).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Work folder: bags, datasets, runs (reused by reruns).")] = Path(
        "experiments_out"
    ),
    results: Annotated[Path, typer.Option(help="The record goes to RESULTS/<quick|full>/lambda-table<N>.json.")] = Path(
        "results"
    ),
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    max_hours: MaxHoursOption = None,
) -> None:
    """Tune DAC-Output's λ in {1, 10, 100} per recipe on the validation contexts (never the test ones).

    The presets' other hyper-parameters (the tuned baselines) stay frozen; the chosen λ is written into
    each recipe's preset atomically.
    """
    from pipeline.experiment.offline_rl import PRESETS
    from pipeline.experiment.runner import TimeBudgetError
    from pipeline.experiment.tuning import TUNABLE

    with _user_errors():
        chosen = _chosen_tables(table, TUNABLE)
        runner = _experiment_runner(
            quick, config, seeds, device, workers, out, results, executor, ray_address, max_hours
        )
        for name in chosen:
            console.rule(f"[bold]λ for Table {name}")
            try:
                record = runner.tune(name, presets or PRESETS, write)
            except TimeBudgetError as stop:
                _stopped(stop, runner)
                return
            tuned = json.loads(record.read_text(encoding="utf-8"))["recipes"]
            for recipe, entry in tuned.items():
                scores = ", ".join(
                    f"λ {c['lambda']:g}: {c['validation_return']['mean']:.2f}" for c in entry["candidates"].values()
                )
                where = f"written to {entry['preset']}" if entry["written"] else "not written"
                console.print(f"{recipe}: λ = {entry['chosen']:g} ({scores}; {where})", soft_wrap=True)
            console.print(f"Record: {record}", soft_wrap=True)


@experiment_app.command("behaviour")
def experiment_behaviour(
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML: its dqn settings and gamma (default: the built-in defaults).")
    ] = None,
    env: Annotated[
        Path | None, typer.Option(help="ReacherConfig YAML of the discrete reacher (default: ours).")
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Greedy episodes per context.")] = 4,
    out: Annotated[Path, typer.Option(help="Work folder: the DQN's checkpoint cache.")] = Path("experiments_out"),
    results: Annotated[Path, typer.Option(help="premise.md / premise.json go here.")] = Path("results/behaviour"),
) -> None:
    """Is the behaviour expert greedy in its own action values? The analytic expert and the DQN side by side."""
    from pipeline.experiment import ExperimentConfig
    from pipeline.experiment.behaviour import write_premise_report
    from sim.config import ReacherConfig

    with _user_errors():
        experiment = load_config(config, ExperimentConfig) if config else ExperimentConfig()
        reacher = load_config(env, ReacherConfig) if env else ReacherConfig()
        markdown = write_premise_report(experiment, reacher, out, results, episodes)
        console.print(Markdown(markdown.read_text(encoding="utf-8")))
        console.print(f"{markdown}", soft_wrap=True)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"symgate {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
