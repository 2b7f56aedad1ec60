"""Merge the newest result of every benchmark on this host into one table.

``make bench`` runs every ``bench/bench_*.py`` (each writes ``bench/results/<name>-<date>-<host>.json``
through ``common.write_result``) and then this script, which writes
``bench/results/<date>-<host>.json`` (every row, with the hardware it ran on) and the same as a
Markdown table, ``bench/results/<date>-<host>.md``: metric, symgate, reference, ratio, target.
"""

from __future__ import annotations

import json
import platform
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import RESULTS

RESULT_FILE = re.compile(r"^(?P<name>[a-z_]+)-(?P<date>\d{4}-\d{2}-\d{2})-(?P<host>.+)\.json$")


def latest_results(folder: Path, host: str) -> dict[str, dict[str, Any]]:
    """The newest result file of each benchmark measured on ``host``, by benchmark name."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in sorted(folder.glob("*.json")):
        match = RESULT_FILE.match(path.name)
        if match is None or match["host"] != host:
            continue
        if match["name"] not in newest or match["date"] > newest[match["name"]][0]:
            newest[match["name"]] = (match["date"], path)
    return {name: json.loads(path.read_text()) for name, (_, path) in sorted(newest.items())}


def markdown(results: dict[str, dict[str, Any]], host: str) -> str:
    """One table over every benchmark's rows, with when and on what each was measured."""
    machines = sorted({f"{r['machine']}, Python {r['python']}" for r in results.values()})
    lines = [
        f"# symgate benchmarks on {host} ({'; '.join(machines)})",
        "",
        "| benchmark | metric | symgate | reference | ratio | target | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for row in result["rows"]:
            lines.append(
                f"| {name} | {row['metric']} | {row['symgate']:.4g} | {row['reference']:.4g} ({row['reference_name']}) "
                f"| {row['ratio']:.2f} | {row['target'] or '—'} | {result['date'][:10]} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    host = platform.node()
    results = latest_results(RESULTS, host)
    if not results:
        raise SystemExit(f"no benchmark results for host {host} in {RESULTS}")
    stem = RESULTS / f"{datetime.now(UTC):%Y-%m-%d}-{host}"
    summary = {"host": host, "benchmarks": results}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(results, host))
    print(markdown(results, host))
    print(f"written to {stem}.json and .md")


if __name__ == "__main__":
    main()
