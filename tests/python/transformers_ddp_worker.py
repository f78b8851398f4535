"""One rank of the 2-process fine-tuning run of test_transformers_ddp.py: a tiny Qwen3-Next on
linattn's kernels, torch DistributedDataParallel over gloo on 127.0.0.1. Prints the global loss
of each step (the mean over ranks) as JSON on rank 0. Run by the test, not by hand:
    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python transformers_ddp_worker.py
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
import transformers_models as tm  # noqa: E402

from linattn.transformers import apply_linattn  # noqa: E402

STEPS, GLOBAL_BATCH, LENGTH, LR = 3, 4, 45, 0.05


def batches():
    g = torch.Generator().manual_seed(7)
    return [torch.randint(3, tm.VOCAB, (GLOBAL_BATCH, LENGTH), generator=g) for _ in range(STEPS)]


def train(model, step_batches, reduce_loss=lambda loss: loss):
    """SGD steps; returns the loss of each step (before its update)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for ids in step_batches:
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        losses.append(reduce_loss(loss.detach()).item())
    return losses


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    apply_linattn()
    model = torch.nn.parallel.DistributedDataParallel(tm.build("qwen3_next").train())
    share = GLOBAL_BATCH // world
    mine = [ids[rank * share:(rank + 1) * share] for ids in batches()]

    def mean_over_ranks(loss):
        dist.all_reduce(loss)
        return loss / world

    losses = train(model, mine, mean_over_ranks)
    if rank == 0:
        print(json.dumps(losses))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
