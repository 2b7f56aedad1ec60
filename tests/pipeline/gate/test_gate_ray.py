"""The gate on a real Ray cluster: the verdict, report numbers and certificate of local, a killed worker retried."""

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.executor import Executor
from pipeline.export import load_contract
from pipeline.export.export import export_run
from pipeline.gate import CERTIFICATE_FILE, REPORT_JSON, run_gate
from pipeline.train import TrainConfig, train
from tests.faults import kill_mid_run
from tests.pipeline.gate.conftest import REPO, ModelCopier, small_gate
from tests.policies import export_expert

pytestmark = pytest.mark.ray
#: What may differ between two runs of the same gate: when and how it ran.
RUN_FIELDS = {"created", "wall_time_s", "workers", "executor"}
#: And what the certificate binds of that: the report's bytes and the time of issue.
CERTIFICATE_RUN_FIELDS = {"certificate_id", "report_sha256", "issued"}


@pytest.fixture(scope="module")
def expert_model(tmp_path_factory: pytest.TempPathFactory, datasets_root: Path) -> Path:
    """The IK + PD expert as an ONNX model, with the contract of a 50-step BC run (the gate conftest's, cheaper)."""
    root = tmp_path_factory.mktemp("ray-gate-model")
    steps = {"steps": 50, "log_every": 50, "checkpoint_every": 50, "metric_states": 16}
    spec = str(REPO / "deploy/symmetry/reacher.yaml")
    augmentation = {"strategy": "none", "spec": spec}
    config = TrainConfig.model_validate({"algorithm": "bc", **steps, "augmentation": augmentation})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
        train(config, "symgate/train-test-expert-v0", root / "run")
        export_run(root / "run", root / "bc")
    export_expert(load_contract(root / "bc"), root / "model")
    return root / "model"


def config() -> Any:
    return small_gate(episodes_per_task=4, env={"contexts": {"train_deg": [0.0], "test_count": 8}})


def gated(model: Path, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Gate ``model``; return its report and certificate without the fields that describe the run."""
    run_gate(model, config(), **options)
    report = json.loads((model / REPORT_JSON).read_text())
    certificate = json.loads((model / CERTIFICATE_FILE).read_text())
    return (
        {k: v for k, v in report.items() if k not in RUN_FIELDS},
        {k: v for k, v in certificate.items() if k not in CERTIFICATE_RUN_FIELDS},
    )


def test_ray_gate_report_and_certificate_equal_local(
    expert_model: Path, model_copy: ModelCopier, ray_cluster: str
) -> None:
    model = model_copy(expert_model)
    local = gated(model, workers=2)
    ray = gated(model, executor=Executor("ray", address=ray_cluster))
    assert local[0]["verdict"] == "pass" and len(local[0]["episodes"]) == 18
    assert ray == local
    assert json.loads((model / REPORT_JSON).read_text())["executor"] == f"ray ({ray_cluster})"


def test_ray_gate_retries_a_killed_worker_and_gives_the_same_report(
    expert_model: Path, model_copy: ModelCopier, ray_cluster: str
) -> None:
    model = model_copy(expert_model)
    local = gated(model, workers=1)
    _, ray = kill_mid_run("symgate-gate", lambda: gated(model, executor=Executor("ray", address=ray_cluster)))
    assert ray == local
