"""Bags/s of ``symgate ingest`` on Ray against the local process pool, same 32-bag fleet, same worker count, one run.

Both run ``pipeline.ingest.ingest`` on the same bags with as many workers: the local executor's
process pool of ``WORKERS`` processes, and one Ray task per bag on a private single-node cluster of
``WORKERS`` CPUs (started once, before the timed runs; its start-up is reported apart). Reported:
the Ray/local throughput ratio (target >= 0.8x). Ray binds every interface, so this re-runs itself
in a loopback-only network namespace (``python -m pipeline.serve``, root only) unless it is in one.

Shard mode (each task writes its bag as a shard, the driver merges them) against driver mode (the
driver receives every episode and writes the dataset), interleaved in the same runs: throughput on
both executors; and the driver's peak memory above its resident size before ingest (a fresh process
per mode, local pool; ``VmHWM`` reset through ``/proc/self/clear_refs``), on the fleet and on a fleet
of ``BIG_FLEET_COPIES`` links to each of its bags (same data, 8x the episodes).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import alternate, median, write_result

from pipeline.executor import Executor
from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, find_bags, ingest
from pipeline.ingest.dataset import merge_shards, write_shard

REPEATS = 3
WORKERS = 2
FLEET = FleetConfig(robots=32, episodes=4)
#: The driver-memory rows also ingest a fleet of this many links to each bag (one fresh process per mode).
BIG_FLEET_COPIES = 8


def ingest_seconds(bags: list[Path], executor: Executor, root: Path, shards: bool = False) -> float:
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    start = time.perf_counter()
    ingest(
        bags,
        IngestConfig(),
        "symgate/bench-scale-v0",
        workers=WORKERS,
        executor=executor,
        shards=shards,
        overwrite=True,
    )
    return time.perf_counter() - start


#: Run in a fresh process: the driver's peak resident memory during one ingest, above its size before it, MB.
PEAK = """
import json, sys
from pathlib import Path
from pipeline.ingest import IngestConfig, find_bags, ingest
import minari, h5py, pybullet, sim  # the imports both modes need, loaded before the baseline
def kib(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
bags = find_bags([Path(sys.argv[1])])
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
before = kib("VmRSS:")
workers, shards = int(sys.argv[2]), sys.argv[3] == "1"
ingest(bags, IngestConfig(), "symgate/bench-peak-v0", workers=workers, shards=shards, overwrite=True)
print(json.dumps({"peak_mb": (kib("VmHWM:") - before) / 1024}))
"""


def merge_seconds(shards: list[Path]) -> float:
    start = time.perf_counter()
    merge_shards(shards, IngestConfig(), "symgate/bench-merge-v0", overwrite=True)
    return time.perf_counter() - start


def copy_seconds(source: Path, target: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(source, target)
    return time.perf_counter() - start


def driver_peak_mb(fleet: Path, root: Path, shards: bool) -> float:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root)}
    run = [sys.executable, "-c", PEAK, str(fleet), str(WORKERS), "1" if shards else "0"]
    out = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.splitlines()[-1])["peak_mb"])


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
            local_shards=lambda: len(bags) / ingest_seconds(bags, Executor(), work / "datasets", shards=True),
            ray_shards=lambda: len(bags) / ingest_seconds(bags, on_ray, work / "datasets", shards=True),
        )
        ray.shutdown()
        for copies in (1, BIG_FLEET_COPIES):  # the fleet, and as many links to each of its bags as copies
            fleet = work / f"fleet-x{copies}"
            fleet.mkdir()
            for bag, copy in ((bag, copy) for bag in bags for copy in range(copies)):
                (fleet / f"{bag.name}_{copy}").symlink_to(bag)
            for mode, sharded in (("driver", False), ("shards", True)):
                samples[f"peak_mb_{mode}_x{copies}"] = [driver_peak_mb(fleet, work / "datasets", sharded)]
            data = work / "datasets" / "symgate" / "bench-peak-v0" / "data" / "main_data.hdf5"
            samples[f"dataset_mb_x{copies}"] = [data.stat().st_size / 2**20]
        shards = [write_shard(bag, IngestConfig(), work / "shards" / bag.name) for bag in bags]
        merged = work / "datasets" / "symgate" / "bench-merge-v0" / "data" / "main_data.hdf5"
        samples |= alternate(
            REPEATS,
            merge_s=lambda: merge_seconds(shards),
            copy_s=lambda: copy_seconds(merged, work / "copy.hdf5"),  # after this repeat's merge
        )
        samples["merged_mb"] = [merged.stat().st_size / 2**20]
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
        *(
            {
                "metric": f"bags/s, shard mode / driver mode, {on}, {len(bags)} bags x {FLEET.episodes} episodes",
                "symgate": median(samples[f"{on}_shards"]),
                "reference": median(samples[on]),
                "reference_name": f"symgate ingest, driver mode, {on}",
                "ratio": median(samples[f"{on}_shards"]) / median(samples[on]),
                "target": "report",
            }
            for on in ("local", "ray")
        ),
        *(
            {
                "metric": f"driver peak MB above its pre-ingest RSS, shard / driver mode, {len(bags) * copies} bags "
                f"(dataset {samples[f'dataset_mb_x{copies}'][0]:.1f} MB, local pool of {WORKERS})",
                "symgate": samples[f"peak_mb_shards_x{copies}"][0],
                "reference": samples[f"peak_mb_driver_x{copies}"][0],
                "reference_name": "symgate ingest, driver mode",
                "ratio": samples[f"peak_mb_shards_x{copies}"][0] / samples[f"peak_mb_driver_x{copies}"][0],
                "target": "report",
            }
            for copies in (1, BIG_FLEET_COPIES)
        ),
        {
            "metric": f"merge_shards MB/s, {len(bags)} shards, {len(bags) * FLEET.episodes} episodes "
            f"({len(bags) * FLEET.episodes / median(samples['merge_s']):.0f} episodes/s; checks, HDF5 group copies)",
            "symgate": samples["merged_mb"][0] / median(samples["merge_s"]),
            "reference": samples["merged_mb"][0] / median(samples["copy_s"]),
            "reference_name": "shutil.copyfile of the merged file",
            "ratio": median(samples["copy_s"]) / median(samples["merge_s"]),
            "target": "report",
        },
    ]
    write_result("scale", rows, samples)


if __name__ == "__main__":
    main()
