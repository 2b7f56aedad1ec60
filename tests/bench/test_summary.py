import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _summary() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the bench scripts import their shared `common` module by name
    spec = importlib.util.spec_from_file_location("bench_summary", BENCH / "summary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(folder: Path, name: str, date: str, host: str, value: float) -> None:
    row = {"metric": f"{name} rate", "symgate": value, "reference": 2.0, "reference_name": "ref", "ratio": value / 2.0}
    result = {"benchmark": name, "rows": [{**row, "target": ">= 0.5"}], "samples": {}, "host": host}
    result |= {"machine": "x86_64, 2 cores", "python": "3.11.7", "date": f"{date}T10:00:00+00:00"}
    (folder / f"{name}-{date}-{host}.json").write_text(json.dumps(result))


def test_newest_result_per_benchmark_of_this_host_makes_the_table(tmp_path: Path) -> None:
    summary = _summary()
    _result(tmp_path, "gate", "2026-11-25", "vm", 1.0)
    _result(tmp_path, "gate", "2026-11-30", "vm", 3.0)
    _result(tmp_path, "gate", "2026-12-01", "other", 9.0)
    _result(tmp_path, "env_step", "2026-11-25", "vm", 5.0)
    (tmp_path / "2026-11-30-vm.json").write_text("{}")  # an earlier summary is not a result
    results = summary.latest_results(tmp_path, "vm")
    assert list(results) == ["env_step", "gate"] and results["gate"]["rows"][0]["symgate"] == 3.0
    table = summary.markdown(results, "vm")
    assert "| gate | gate rate | 3 | 2 (ref) | 1.50 | >= 0.5 | 2026-11-30 |" in table
    assert "x86_64, 2 cores, Python 3.11.7" in table
