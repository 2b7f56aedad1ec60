"""Latency of the exported ONNX policy at batch 1 (what the robot pays each control tick) vs torch eager.

A small fleet is recorded, ingested, trained for a few hundred IQL updates and exported through the
real pipeline; then the same policy answers single observations through ONNX Runtime
(``intra_op_num_threads=1``, as on the robot) and through the torch module it was exported from.
Each call is timed on its own; p50 and p99 over all calls are reported.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from common import exported_model, write_result

from pipeline.export import ONNX_FILE, load_contract
from pipeline.export.export import load_policy

CALLS = 20_000


def latencies_us(call: Callable[[Any], object], feeds: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(feeds))
    for i, feed in enumerate(feeds):
        start = time.perf_counter_ns()
        call(feed)
        out[i] = (time.perf_counter_ns() - start) / 1e3
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="symgate-bench-inference-"))
    try:
        exported_model(work)
        contract = load_contract(work / "model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(work / "model" / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = [
            {i.name: rng.normal(size=(1, i.shape[1] or 0)).astype(np.float32) for i in contract.inputs}
            for _ in range(CALLS)
        ]
        torch.set_num_threads(1)
        module = load_policy(work / "run").policy  # the torch module the graph was exported from
        torch_feeds = [tuple(torch.as_tensor(v) for v in feed.values()) for feed in feeds]
        with torch.no_grad():
            for _ in range(500):  # warm-up both
                session.run(None, feeds[0])
                module(*torch_feeds[0])
            onnx_us = latencies_us(lambda feed: session.run(None, feed), feeds)
            torch_us = latencies_us(lambda feed: module(*feed), torch_feeds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for label, q in (("p50", 50), ("p99", 99)):
        ours, ref = float(np.percentile(onnx_us, q)), float(np.percentile(torch_us, q))
        rows.append(
            {
                "metric": f"policy latency at batch 1, {label} (µs; ONNX Runtime, 1 thread)",
                "symgate": ours,
                "reference": ref,
                "reference_name": "the same policy in torch eager, 1 thread",
                "ratio": ref / ours,
                "target": "p50 <= 10 µs" if label == "p50" else "p99 <= 25 µs",
            }
        )
    write_result("inference", rows, {"onnx_us": onnx_us[::100].tolist(), "torch_us": torch_us[::100].tolist()})


if __name__ == "__main__":
    main()
