"""Bags/s of ``symgate ingest`` on Ray against the local process pool, same 32-bag fleet, same worker count, one run.

Both run ``pipeline.ingest.ingest`` on the same bags with as many workers: the local executor's
process pool of ``WORKERS`` processes, and one Ray task per bag on a private single-node cluster of
``WORKERS`` CPUs (started once, before the timed runs; its start-up is reported apart). Reported:
the Ray/local throughput ratio (target >= 0.8x). Ray binds every interface, so this re-runs itself
in a loopback-only network namespace (``python -m pipeline.serve``, root only) unless it is in one.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from common import alternate, median, write_result

from pipeline.executor import Executor
from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, find_bags, ingest

REPEATS = 3
WORKERS = 2
FLEET = FleetConfig(robots=32, episodes=4)


def ingest_seconds(bags: list[Path], executor: Executor, root: Path) -> float:
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    start = time.perf_counter()
    ingest(bags, IngestConfig(), "symgate/bench-scale-v0", workers=WORKERS, executor=executor, overwrite=True)
    return time.perf_counter() - start


def main() -> None:
    if sorted(name for _, name in socket.if_nameindex()) != ["lo"]:
        os.execv(sys.executable, [sys.executable, "-m", "pipeline.serve", sys.executable, *sys.argv])
    import ray

    work = Path(tempfile.mkdtemp(prefix="symgate-bench-scale-"))
    try:
        record_fleet(FLEET, work / "fleet", workers=WORKERS)
        bags = find_bags([work / "fleet"])
        started = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=WORKERS,
            object_store_memory=256 << 20,  # fits the namespace's 1 GB /dev/shm
            include_dashboard=False,
        )
        on_ray = Executor("ray")  # joins the cluster this process started
        cluster_start = time.perf_counter() - started
        samples = alternate(
            REPEATS,
            local=lambda: len(bags) / ingest_seconds(bags, Executor(), work / "datasets"),
            ray=lambda: len(bags) / ingest_seconds(bags, on_ray, work / "datasets"),
        )
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local, on_cluster = median(samples["local"]), median(samples["ray"])
    samples["ray_cluster_start_s"] = [cluster_start]
    rows = [
        {
            "metric": f"bags/s, {len(bags)} bags x {FLEET.episodes} episodes, {WORKERS} workers",
            "symgate": on_cluster,
            "reference": local,
            "reference_name": f"symgate ingest, local process pool of {WORKERS}",
            "ratio": on_cluster / local,
            "target": ">= 0.8",
        },
    ]
    write_result("scale", rows, samples)


if __name__ == "__main__":
    main()
