"""One rank of the data-parallel test (test_torch_distributed.py starts two of these).

    python ddp_worker.py RANK WORLD_SIZE PORT OUT

Each rank trains its shard of a fixed batch with DistributedDataParallel over gloo on
127.0.0.1 and saves its all-reduced gradients (and loss) to OUT.
"""

from __future__ import annotations

import datetime
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from linattn import _core
from linattn.models import CausalLM, LMConfig

BATCH, SEQ, VOCAB = 4, 40, 64


def model_and_batch():
    torch.manual_seed(0)
    config = LMConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, mixer="gated_deltanet",
                      mixer_kwargs=dict(head_dim=8, num_heads=2))
    batch = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(1))
    return CausalLM(config), batch


def loss_of(model, batch):
    logits, _ = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())


def main(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    _core.set_num_threads(1)
    model, batch = model_and_batch()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    shard = batch.chunk(world)[rank]  # equal shards: the mean of shard means is the mean
    loss = loss_of(ddp, shard)
    loss.backward()  # DDP all-reduces (averages) the gradients across the ranks
    dist.destroy_process_group()
    grads = {n: p.grad for n, p in model.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
