"""Latency of the exported ONNX policies at batch 1 (what the robot pays each control tick) vs a bare MLP.

For both shipped robot profiles (``reacher`` and ``kuka_iiwa``, ``features: reach``) and for the
paper's reacher without a profile (``paper``: ``features: reacher``, what ``make demo`` serves) a small fleet
is recorded, ingested, trained for a few IQL updates with ``canonical`` and with ``dac-output``
(the plain graph: the symmetry is in the training loss only) and exported through the real
pipeline. Each graph then answers single observations through ONNX Runtime
(``intra_op_num_threads=1``, as on the robot), alternating in blocks with the reference built in
the same run: a bare float32 MLP of the same hidden sizes and input/output widths, ``Gemm``/``Relu``
only, built with ``onnx.helper`` (the floor any policy of that size pays). Every call is timed on
its own; p50 and p99 over all calls are compared as ratios (the machine is shared, so absolute
times do not carry from one run to the next, the ratios do).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from common import write_result
from onnx import TensorProto, helper, numpy_helper

from pipeline.export import ONNX_FILE, load_contract

CALLS = 20_000  # timed calls per graph
BLOCK = 500  # calls per graph before switching to the other (alternation spreads machine noise over both)
WARMUP = 500
HIDDEN = (256, 256)  # TrainConfig's default
ROBOTS = ("reacher", "paper", "kuka_iiwa")  # paper: the reacher without a profile, features: reacher
STRATEGIES = ("canonical", "dac-output")
P50_TARGET, P99_TARGET = 1.5, 2.0  # ≤ this many times the bare MLP's p50 and p99


def bare_mlp(in_width: int, hidden: tuple[int, ...], out_width: int, path: Path) -> Path:
    """A float32 MLP ``Gemm → Relu → … → Gemm`` with random weights, one input ``x`` of shape ``(B, in)``."""
    rng = np.random.default_rng(0)
    widths = (in_width, *hidden, out_width)
    nodes, initializers, previous = [], [], "x"
    for layer, (fan_in, fan_out) in enumerate(pairwise(widths)):
        weight = (rng.uniform(-1, 1, (fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.uniform(-1, 1, fan_out) / np.sqrt(fan_in)).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{layer}"), numpy_helper.from_array(bias, f"b{layer}")]
        last = layer == len(widths) - 2
        out = "y" if last else f"h{layer}"
        nodes.append(helper.make_node("Gemm", [previous, f"w{layer}", f"b{layer}"], [out if last else f"g{layer}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{layer}"], [out]))
        previous = out
    graph = helper.make_graph(
        nodes,
        "bare_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def session(path: Path) -> ort.InferenceSession:
    """A single-threaded CPU session, as on the robot."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def alternating_latencies_us(calls: dict[str, Callable[[int], object]], count: int) -> dict[str, np.ndarray]:
    """Time every call ``count`` times, one block of each in turn; µs per call."""
    out = {name: np.empty(count) for name in calls}
    for call in calls.values():
        for i in range(WARMUP):
            call(i)
    for start in range(0, count, BLOCK):
        for name, call in calls.items():
            times = out[name]
            for i in range(start, min(start + BLOCK, count)):
                begin = time.perf_counter_ns()
                call(i)
                times[i] = (time.perf_counter_ns() - begin) / 1e3
    return out


def trained_model(work: Path, key: str, strategy: str) -> Path:
    """fleet → ingest → IQL (a few updates) → export for a robot profile (or ``paper``), through the real pipeline."""
    from pipeline.export.export import export_run
    from pipeline.fleet import FleetConfig, record_fleet
    from pipeline.ingest import IngestConfig, ingest
    from pipeline.ingest.config import config_for_robot
    from pipeline.train import TrainConfig, train

    robot = None if key == "paper" else key
    dataset = f"symgate/bench-inference-{key}-v0"
    fleet = work / f"fleet-{key}"
    if not fleet.exists():
        record_fleet(FleetConfig.model_validate({"robot": robot, "robots": 1, "episodes": 3}), fleet, workers=1)
        ingest([fleet], config_for_robot(robot) if robot else IngestConfig(), dataset, workers=1)
    steps = 20
    config = TrainConfig.model_validate(
        {
            **({"robot": robot, "features": "reach"} if robot else {"features": "reacher"}),
            "hidden": HIDDEN,
            "steps": steps,
            "batch_size": 64,
            "log_every": steps,
            "checkpoint_every": steps,
            "metric_states": 64,
            "augmentation": {"strategy": strategy},
        }
    )
    run = work / f"run-{key}-{strategy}"
    train(config, dataset, run)
    export_run(run, work / f"model-{key}-{strategy}")
    return work / f"model-{key}-{strategy}"


def measure(model: Path, work: Path, label: str) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Rows comparing one exported graph with the bare MLP of its sizes, timed alternately."""
    contract = load_contract(model)
    (graph_input,) = contract.inputs
    width = int(graph_input.shape[1] or 0)
    out_width = int(contract.outputs[0].shape[1] or 0)
    graph = onnx.load(str(model / ONNX_FILE)).graph
    ops = Counter(node.op_type for node in graph.node)
    policy = session(model / ONNX_FILE)
    reference = session(bare_mlp(width, HIDDEN, out_width, work / f"bare-{label.replace(' ', '-')}.onnx"))
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(CALLS, 1, width)).astype(np.float32)
    feeds = [{graph_input.name: observation} for observation in observations]
    flat = [{"x": observation} for observation in observations]
    times = alternating_latencies_us(
        {"policy": lambda i: policy.run(None, feeds[i]), "bare": lambda i: reference.run(None, flat[i])}, CALLS
    )
    rows = []
    for name, q, target in (("p50", 50, P50_TARGET), ("p99", 99, P99_TARGET)):
        ours, ref = float(np.percentile(times["policy"], q)), float(np.percentile(times["bare"], q))
        rows.append(
            {
                "metric": f"{label} policy latency at batch 1, {name} (µs; ORT, 1 thread; {len(graph.node)} nodes)",
                "symgate": ours,
                "reference": ref,
                "reference_name": f"bare float32 MLP {'×'.join(map(str, HIDDEN))} (Gemm/Relu), same run",
                # Here the ratio is symgate / reference: how many bare MLPs one policy call costs.
                "ratio": ours / ref,
                "target": f"ratio <= {target}",
            }
        )
    print(f"{label}: {len(graph.node)} nodes {dict(ops.most_common())}")
    samples = {f"{label}_us": times["policy"][::100].tolist(), f"{label}_bare_us": times["bare"][::100].tolist()}
    return rows, samples


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="symgate-bench-inference-"))
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    rows: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {}
    try:
        for robot in ROBOTS:
            for strategy in STRATEGIES:
                model = trained_model(work, robot, strategy)
                new_rows, new_samples = measure(model, work, f"{robot} {strategy}")
                rows += new_rows
                samples |= new_samples
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_result("inference", rows, samples)


if __name__ == "__main__":
    main()
