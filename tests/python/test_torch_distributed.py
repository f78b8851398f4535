"""Data-parallel training across two processes (torch.distributed, gloo, 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import ddp_worker  # noqa: E402

WORKER = Path(ddp_worker.__file__)
TIMEOUT = 120  # seconds for the whole run: a hung rendezvous fails the test instead of CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(ranks, world, port, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {r: subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), str(port),
                                  str(tmp_path / f"rank{r}.pt")], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in ranks}
    try:
        for r, p in procs.items():
            output, _ = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, f"rank {r} failed:\n{output}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    return {r: torch.load(tmp_path / f"rank{r}.pt") for r in ranks}


def test_data_parallel_gradients_equal_a_single_process_run(tmp_path):
    results = run_workers([0, 1], 2, free_port(), tmp_path)
    model, batch = ddp_worker.model_and_batch()  # the single-process run on the whole batch
    loss = ddp_worker.loss_of(model, batch)
    loss.backward()
    single = {"loss": loss.detach(), "grads": {n: p.grad for n, p in model.named_parameters()}}
    for rank in (0, 1):
        grads = results[rank]["grads"]
        assert grads.keys() == single["grads"].keys()
        for name, g in grads.items():
            ref = single["grads"][name]
            # Same gradients up to the summation order of the all-reduce (fp32).
            assert float((g - ref).norm() / ref.norm()) <= 1e-5, (rank, name)
    for name, g in results[0]["grads"].items():  # all-reduced: the ranks agree exactly
        assert torch.equal(g, results[1]["grads"][name]), name
    # The mean of the two shard losses is the full-batch loss.
    mean = (results[0]["loss"] + results[1]["loss"]) / 2
    assert abs(float(mean - single["loss"])) <= 1e-5 * float(single["loss"])
