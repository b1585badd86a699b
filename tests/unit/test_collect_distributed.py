"""vision_lens.streaming under torch.distributed: two gloo processes on the CPU (launched as
torchrun would: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) give the single-process result bit
for bit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch

import vision_lens as vl

WHAT = "heads,embed,labels,head_moments,mean:blocks.1.hook_resid_post"

WORKER = """
import sys, torch, torch.distributed as dist, vision_lens as vl

def main(out, threads):
    torch.set_num_threads(threads)  # the parent's: GEMM rounding may depend on the thread count
    dist.init_process_group("gloo")
    model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
    images = torch.randn(22, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    data = [(image, i % 4) for i, image in enumerate(images)]
    vl.collect(model, data, WHAT, out, batch_size=2, shard_size=4, progress=False)
    dist.destroy_process_group()

if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process(tmp_path):
    script = WORKER.replace("WHAT", repr(WHAT))
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "two"), str(torch.get_num_threads())],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
    images = torch.randn(22, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    data = [(image, i % 4) for i, image in enumerate(images)]
    one = vl.collect(
        model, data, WHAT, tmp_path / "one", batch_size=2, shard_size=4, progress=False
    )
    for proc in procs:
        assert proc.wait(60) == 0, proc.stderr.read().decode()

    two = vl.open_collected(tmp_path / "two")
    assert two.manifest["world_size"] == 2 and len(two.manifest["shards"]) == 6
    assert [s["sha256"] for s in one.manifest["shards"]] == [
        s["sha256"] for s in two.manifest["shards"]
    ]
    for name in ("heads", "embed", "labels"):
        assert torch.equal(one[name].load(), two[name].load())
    for name in ("head_moments", "mean:blocks.1.hook_resid_post"):
        assert all(torch.equal(one[name][k], two[name][k]) for k in one[name])
    assert int(two.head_moments()["count"][0, 0]) == 22
