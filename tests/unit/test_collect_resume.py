"""Resuming vision_lens.streaming: kill a subprocess at random times, rerun until done, and the
shards, statistics and manifest shards equal an uninterrupted run's bit for bit."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import torch

import vision_lens as vl

# A tiny model over a slow synthetic dataset (48 images, ``delay`` s each) into 12 shards of 4.
SCRIPT = """
import sys, time, torch, vision_lens as vl

class Slow(torch.utils.data.Dataset):
    def __init__(self, delay):
        self.delay = delay
    def __len__(self):
        return 48
    def __getitem__(self, i):
        time.sleep(self.delay)
        return torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(i)), i % 3

def main(out, delay, threads=None):
    if threads:  # the parent's: GEMM rounding may depend on the thread count
        torch.set_num_threads(threads)
    model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
    vl.collect(model, Slow(delay), "heads,embed,labels,head_moments,mean:blocks.0.hook_resid_post",
               out, batch_size=2, shard_size=4, progress=False)

if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
"""


def _run(out: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), str(delay), str(torch.get_num_threads())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*.safetensors"))


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    rng = random.Random(0)
    kills = 0
    deadline = time.monotonic() + 12  # two kills, fewer on a loaded machine
    while time.monotonic() < deadline:
        before = len(_shards(resumed))
        proc = _run(resumed, 0.01)
        # Wait until this run makes progress (past the imports), then kill it at a random time.
        while proc.poll() is None and len(_shards(resumed)) == before:
            time.sleep(0.01)
        if proc.poll() is None:
            time.sleep(rng.uniform(0.0, 0.15))
            proc.kill()
            proc.wait()
            kills += 1
            if kills < 2:
                continue
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()
        break
    final = _run(resumed, 0.0)
    assert final.wait(60) == 0, final.stderr.read().decode()
    assert kills >= 1
    # The uninterrupted run, in this process.
    namespace: dict = {"__name__": "collect_script"}
    exec(compile(SCRIPT, "collect_script", "exec"), namespace)
    namespace["main"](str(reference), 0.0)

    a, b = vl.open_collected(reference), vl.open_collected(resumed)
    assert [s["sha256"] for s in a.manifest["shards"]] == [
        s["sha256"] for s in b.manifest["shards"]
    ]
    for name in ("heads", "embed", "labels"):
        assert torch.equal(a[name].load(), b[name].load())
    for name in ("head_moments", "mean:blocks.0.hook_resid_post"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])
    assert int(b.head_moments()["count"][0, 0]) == 48  # nothing counted twice
    assert not list(resumed.glob(".*.tmp"))
