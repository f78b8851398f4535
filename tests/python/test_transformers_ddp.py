"""Distributed fine-tuning of a transformers model on linattn's kernels: two CPU processes
(torch DistributedDataParallel, gloo on 127.0.0.1) each with half of the global batch give the
losses of one process with the whole batch. Three SGD steps; fp32, so 1e-5 relative (the
gradient all-reduce sums in a different order)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import transformers_ddp_worker as ddp_worker  # noqa: E402
import transformers_models as tm  # noqa: E402

from linattn.transformers import apply_linattn, revert_linattn  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_losses_match_one_process():
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(HERE / "transformers_ddp_worker.py")],
                              env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=600) for p in ranks]
    for p, (_, err) in zip(ranks, outputs):
        assert p.returncode == 0, err[-3000:]
    distributed = json.loads(outputs[0][0].strip().splitlines()[-1])

    apply_linattn()
    try:
        single = ddp_worker.train(tm.build("qwen3_next").train(), ddp_worker.batches())
    finally:
        revert_linattn()
    assert len(distributed) == len(single) == ddp_worker.STEPS
    assert single[-1] < single[0]  # it trains
    for d, s in zip(distributed, single):
        assert abs(d - s) <= 1e-5 * abs(s), (distributed, single)
