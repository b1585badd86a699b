"""Dataset-scale passes into shards with a manifest: :func:`collect` and :func:`open_collected`.

One pass over a dataset produces named products (per-image decompositions, hook activations,
the model's output) and float64 statistics (head moments for TextSpan, activation sums for
mean-ablation) into ``out/shard-NNNNN.safetensors`` plus ``out/manifest.json``. The pass is
resumable (rerun the same call) and splits across processes with torch.distributed.

Modules, one job each: ``data`` (what is read: datasets, image folders), ``capture`` (what a
forward pass keeps for the products), ``projections`` (head and token terms with the weights
folded once per pass), ``products`` (what a batch gives), ``shards`` (the files and the
manifest), ``writer`` (writing shards on a background thread), ``distributed`` (who writes which
shard), ``run`` (the pass), ``reader`` (reading a run back).

Multi-process and multi-node runs: launch the same script with ``torchrun``; it initialises
torch.distributed and calls :func:`collect` as usual. Shard ``j`` goes to rank
``j % world_size``; rank 0 writes the manifest and merges the statistics after a barrier, so
``out`` must be a folder every rank sees (a shared file system on several nodes)::

    # collect_heads.py
    import os, torch, torch.distributed as dist, vision_lens as vl
    dist.init_process_group("nccl")  # "gloo" on CPUs
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    model = vl.load_clip("ViT-B-16", "openai")[0]
    vl.collect(model, "/data/imagenet/val", "heads,embed,head_moments", "/mnt/nfs/runs/b16",
               device=f"cuda:{os.environ['LOCAL_RANK']}", batch_size=256)
    dist.destroy_process_group()

    # one node, 8 GPUs
    torchrun --nproc_per_node 8 collect_heads.py
    # two nodes of 8 GPUs: run on each node, with node_rank 0 and 1
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 \\
        --master_addr node0.example --master_port 29500 collect_heads.py

The result is bit-identical to a single-process run (the same global batches, statistics summed
shard by shard in order), and an interrupted run resumes with any world size.

Example:
    >>> import tempfile, torch, vision_lens as vl
    >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
    >>> out = tempfile.mkdtemp()
    >>> what = ["embed", "mean:blocks.1.hook_resid_post"]
    >>> run = vl.collect(model, torch.randn(6, 3, 16, 16), what, out, batch_size=2,
    ...                  progress=False)
    >>> vl.open_collected(out).mean("blocks.1.hook_resid_post").shape
    torch.Size([5, 32])
"""

from vision_lens.streaming.reader import CollectedRun, LazyProduct, open_collected
from vision_lens.streaming.run import collect

__all__ = ["CollectedRun", "LazyProduct", "collect", "open_collected"]
