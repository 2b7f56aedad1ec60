"""Messages/s of ``symgate ingest`` against a plain rosbags read-and-deserialize loop, same bags, one run.

The reference decodes every message of every bag with ``AnyReader.deserialize`` and nothing else:
the floor any bag-based ingestion pays. symgate ingest also maps fields by name, cleans and
resamples them, checks every array's length, recovers the tick grid from the commands, applies the
reward rule and writes the Minari dataset (standard JointState topics are decoded in bulk, see
pipeline/ingest/decode.py). Reported: the ratio at one worker (target >= 0.8x the raw decode rate)
and the speed-up from one to two workers. The driver writes each bag's episodes while the workers
read later bags; the workers fork from one forkserver per driver process, which imports the ingest
modules once, in the first 2-worker repeat (the other repeats reuse it, like a long-lived driver).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from common import alternate, median, write_result
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, find_bags, ingest

REPEATS = 5
FLEET = FleetConfig(robots=8, episodes=50)  # ~220k messages: long enough that process start-up (~0.4 s) amortises


def count_messages(bags: list[Path]) -> int:
    total = 0
    for bag in bags:
        with AnyReader([bag]) as reader:
            total += reader.message_count
    return total


def raw_decode_seconds(bags: list[Path]) -> float:
    typestore = get_typestore(Stores.ROS2_JAZZY)
    start = time.perf_counter()
    for bag in bags:
        with AnyReader([bag], default_typestore=typestore) as reader:
            for connection, _, raw in reader.messages():
                reader.deserialize(raw, connection.msgtype)
    return time.perf_counter() - start


def ingest_seconds(bags: list[Path], workers: int, root: Path) -> float:
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    start = time.perf_counter()
    ingest(bags, IngestConfig(), "symgate/bench-v0", workers=workers, overwrite=True)
    return time.perf_counter() - start


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="symgate-bench-"))
    try:
        record_fleet(FLEET, work / "fleet", workers=2)
        bags = find_bags([work / "fleet"])
        messages = count_messages(bags)
        samples = alternate(
            REPEATS,
            raw_decode=lambda: messages / raw_decode_seconds(bags),
            ingest_1_worker=lambda: messages / ingest_seconds(bags, 1, work / "datasets"),
            ingest_2_workers=lambda: messages / ingest_seconds(bags, 2, work / "datasets"),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw, one, two = (median(samples[k]) for k in ("raw_decode", "ingest_1_worker", "ingest_2_workers"))
    rows = [
        {
            "metric": f"messages/s, 1 worker ({messages} messages, {len(bags)} bags)",
            "symgate": one,
            "reference": raw,
            "reference_name": "rosbags AnyReader read + deserialize, 1 process",
            "ratio": one / raw,
            "target": ">= 0.8",
        },
        {
            "metric": "messages/s, 2 workers vs 1 worker (scaling)",
            "symgate": two,
            "reference": one,
            "reference_name": "symgate ingest, 1 worker",
            "ratio": two / one,
            "target": "> 1.3 on 2 cores",
        },
    ]
    write_result("ingest", rows, samples)


if __name__ == "__main__":
    main()
