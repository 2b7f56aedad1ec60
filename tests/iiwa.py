"""A tiny trained KUKA iiwa policy (CI size), shared by the pipeline tests and the ROS serving tests."""

from pathlib import Path

from pipeline.export.export import export_run
from pipeline.ingest import ingest
from pipeline.ingest.config import config_for_robot
from pipeline.train import TrainConfig, train

#: The iiwa profile's controlled joints, in action order.
IIWA_JOINTS = tuple(f"lbr_iiwa_joint_{i}" for i in range(1, 8))
#: Canonical IQL on the profile's reach features, 40 updates of a 32×32 network: a model to serve and gate,
#: not one that reaches (the demo's policy does: tests/pipeline/test_cli_robots_demo.py).
TINY_IQL = {
    "robot": "kuka_iiwa",
    "features": "reach",
    "steps": 40,
    "batch_size": 64,
    "hidden": [32, 32],
    "log_every": 40,
    "checkpoint_every": 40,
    "metric_states": 32,
    "augmentation": {"strategy": "canonical"},
}


def tiny_iiwa_model(fleet: Path, dataset_id: str, out: Path) -> Path:
    """An iiwa fleet's bags → Minari ``dataset_id`` (the profile's mapping) → :data:`TINY_IQL` → ONNX.

    Args:
        fleet: Bags recorded by an iiwa fleet (``record_fleet(FleetConfig(robot="kuka_iiwa", ...))``).
        dataset_id: The dataset to ingest them into (in ``MINARI_DATASETS_PATH``; replaced if it exists).
        out: Folder for the training run (``out/run``) and the exported model.

    Returns:
        The model folder, ``out/model``.
    """
    ingest([fleet], config_for_robot("kuka_iiwa"), dataset_id, workers=1, overwrite=True)
    train(TrainConfig.model_validate(TINY_IQL), dataset_id, out / "run")
    export_run(out / "run", out / "model")
    return out / "model"
