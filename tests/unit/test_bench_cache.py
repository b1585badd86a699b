"""``benchmarks/bench_cache.py`` runs end to end on a tiny ViT and writes every variant.

Only the shape of the results is checked: timings on a shared machine are noise, so no ratio is
asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cache.py"
VARIANTS = (
    "plain",
    "ours_forward",
    "ours_cache_all",
    "ours_cache_no_result",
    "ours_decomposition_cache",
    "ours_cache_bf16",
    "tl_bridge",
)


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_quick_run_writes_every_variant(tmp_path):
    out = tmp_path / "bench_cache.json"
    # fork: one fresh process per measurement without re-importing torch each time (fast).
    proc = _run("--quick", "--isolation", "fork", "--threads", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["config"]["hidden"] == 64 and result["config"]["rounds"] == 2
    assert set(result["versions"]) >= {"torch", "transformers", "transformer_lens", "vision_lens"}
    rows = result["variants"]
    assert list(rows) == list(VARIANTS)
    for name, row in rows.items():
        if row["status"] == "skipped":  # cache_dtype missing, or no offline bridge: say why
            assert name in ("ours_cache_bf16", "tl_bridge") and row["reason"]
            continue
        assert row["status"] == "ok", (name, row)
        assert len(row["times_s"]) == 2 and all(t > 0 for t in row["times_s"]), name
        assert math.isfinite(row["memory_added_mb"]), name
    cache_all = rows["ours_cache_all"]
    assert cache_all["cache_mb"] > 0 and cache_all["keys"] > 0
    assert rows["plain"]["keys"] == 0 and rows["plain"]["cache_mb"] == 0
    assert "| variant | keys | cache MB |" in proc.stdout


@pytest.mark.slow
def test_subprocess_worker_reports_one_measurement():
    # The default isolation: a fresh interpreter per measurement (slow: it imports torch).
    proc = _run("--worker", "ours_cache_all", "--quick", "--threads", "1")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_CACHE_RESULT "))
    row = json.loads(line.split(" ", 1)[1])
    assert row["time_s"] > 0 and row["cache_mb"] > 0 and math.isfinite(row["memory_added_mb"])
