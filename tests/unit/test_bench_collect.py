"""``benchmarks/bench_collect.py --quick`` runs end to end and writes every size.

Only the shape of the results is checked: timings on a shared machine are noise, so the ratio is
not asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from vision_lens.shapes.pretrained import shapes_weights_path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_collect.py"


@pytest.mark.skipif(not shapes_weights_path().is_file(), reason="shipped shapes weights missing")
def test_quick_run_writes_every_size(tmp_path):
    out = tmp_path / "bench_collect.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["config"]["sizes"] == [32, 64, 128] and result["config"]["batch"] == 16
    assert result["config"]["directions"][0] == 100 and result["config"]["gpu"] is None
    rows = result["sizes"]
    assert [row["images"] for row in rows] == [32, 64, 128]
    for row in rows:
        assert "error" not in row, row
        assert row["forward_images_per_s"] > 0 and row["collect_images_per_s"] > 0
        assert math.isfinite(row["ratio"]) and row["peak_rss_mb"] > 0
        assert row["stored_mb"] > 0
    assert rows[-1]["stored_mb"] > rows[0]["stored_mb"]  # products grow on disk, not in memory
    assert result["ratio_collect_over_forward"] > 0
    assert "| images | forward img/s |" in proc.stdout
