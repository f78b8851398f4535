"""Training-step benchmark: a small Gated DeltaNet LM, linattn's C++ mixer against the
same model with a PyTorch chunked formulation of the mixer, measured in the same run.

    .venv/bin/python -m linattn.bench_train --threads 2            # B=8, T=512, 4 x d256 x 4 heads

One step = forward + backward + AdamW on next-token cross-entropy. Both models hold the same
weights and see the same batch; the only difference is GatedDeltaNet.recurrence: linattn's
chunk_gated_delta_rule (C++ forward and backward) or ``torch_chunk_gated_delta_rule`` below
(PyTorch ops, differentiated by autograd); everything else (projections, linattn's short
convolution, norms, SwiGLU, head, AdamW) is shared. Steps of the two models alternate, round
after round, so that a busy machine slows both alike; the run prints the fastest and the median
step of each, the ratio of the fastest, and the relative difference of the two models' gradients
(a check that they compute the same function).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from . import _core
from .layers import GatedDeltaNet
from .models import CausalLM, LMConfig


def torch_chunk_gated_delta_rule(q, k, v, g, beta, initial_state=None,
                                 output_final_state: bool = False, chunk_size: int = 64):
    """Baseline: the chunked gated delta rule in PyTorch (algorithms.md §4.6 (b), the UT
    transform §3.5), q and k L2-normalised first, scale K^-0.5, differentiable by autograd.
    q, k [B, T, H, K]; v [B, T, H, V]; g, beta [B, T, H]. Per chunk of C rows, with G the
    chunk-local cumulative log decay and Γ_ij = exp(G_i - G_j) (i >= j):
      T0 = (I + tril(diag(β)(K Kᵀ ⊙ Γ), -1))^-1,  W = T0 (β ⊙ e^G ⊙ K),  U = T0 (β ⊙ V)
      Ṽ = U - W S,  O = (Q ⊙ e^G) S + ((Q Kᵀ) ⊙ Γ) Ṽ,  S <- e^{G_C} S + (K ⊙ e^{G_C - G})ᵀ Ṽ
    the last line sequential over chunks, everything else batched over (batch, head, chunk)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    N = -(-T // C)
    pad = N * C - T
    q = F.normalize(q.float(), dim=-1) * K ** -0.5
    k = F.normalize(k.float(), dim=-1)

    def chunks(x):  # [B, T, H, ...] -> [B, H, N, C, ...], zero rows padding T (g = beta = 0)
        x = x.float().transpose(1, 2)
        if pad:
            x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
        return x.reshape(B, H, N, C, *x.shape[3:])

    q, k, v = chunks(q), chunks(k), chunks(v)
    beta = chunks(beta[..., None])[..., 0]
    G = chunks(g[..., None])[..., 0].cumsum(-1)                            # [B, H, N, C]
    lower = torch.ones(C, C, dtype=torch.bool).tril()
    gamma = (G[..., :, None] - G[..., None, :]).masked_fill(~lower, -torch.inf).exp()
    L = (beta[..., None] * (k @ k.transpose(-1, -2)) * gamma).tril(-1)
    eye = torch.eye(C)
    T0 = torch.linalg.solve_triangular(eye + L, eye.expand_as(L), upper=False,
                                       unitriangular=True)
    W = T0 @ (k * (beta * G.exp())[..., None])
    U = T0 @ (v * beta[..., None])
    A = (q @ k.transpose(-1, -2)) * gamma
    Qg = q * G.exp()[..., None]
    Kd = k * (G[..., -1:] - G).exp()[..., None]
    decay = G[..., -1].exp()[..., None, None]                              # [B, H, N, 1, 1]

    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float()
    outs = []
    for n in range(N):
        v_new = U[:, :, n] - W[:, :, n] @ S
        outs.append(Qg[:, :, n] @ S + A[:, :, n] @ v_new)
        S = decay[:, :, n] * S + Kd[:, :, n].transpose(-1, -2) @ v_new
    o = torch.stack(outs, 2).reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(v.dtype), (S if output_final_state else None)


class TorchChunkedGatedDeltaNet(GatedDeltaNet):
    """GatedDeltaNet whose recurrence is the PyTorch chunked baseline."""

    def recurrence(self, q, k, v, g, beta, initial_state, output_final_state, form):
        return torch_chunk_gated_delta_rule(q, k, v, g, beta, initial_state, output_final_state)


def make_models(args):
    config = LMConfig(vocab_size=args.vocab, hidden_size=args.d_model, num_layers=args.layers,
                      mixer="gated_deltanet",
                      mixer_kwargs=dict(num_heads=args.heads, head_dim=args.d_model // args.heads,
                                        expand_v=args.expand_v))
    torch.manual_seed(0)
    model = CausalLM(config)
    baseline = copy.deepcopy(model)
    for block in baseline.blocks:
        block.mixer.__class__ = TorchChunkedGatedDeltaNet  # same parameters, other recurrence
    return model, baseline


def train_step(model, optimizer, batch):
    logits, _ = model(batch[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def gradient_difference(model, baseline, batch) -> float:
    """||g_linattn - g_torch|| / ||g_torch|| over all parameters, for one batch."""
    grads = []
    for m in (model, baseline):
        m.zero_grad(set_to_none=True)
        logits, _ = m(batch[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        m.zero_grad(set_to_none=True)
    return float((grads[0] - grads[1]).norm() / grads[1].norm())


def mixer_inputs(args, gen):
    """The recurrence's inputs at the model's shapes (q, k, v pre-normalisation, gates in range),
    requiring grad."""
    B, T, H = args.batch, args.seq, args.heads
    K = args.d_model // H
    V = int(K * args.expand_v)
    x = dict(q=torch.randn(B, T, H, K, generator=gen), k=torch.randn(B, T, H, K, generator=gen),
             v=torch.randn(B, T, H, V, generator=gen),
             g=F.logsigmoid(torch.randn(B, T, H, generator=gen)) / 4,
             beta=torch.rand(B, T, H, generator=gen))
    return {n: t.requires_grad_() for n, t in x.items()}


def mixer_step(recurrence, x, do):
    """Forward + backward of the recurrence alone."""
    o, _ = recurrence(x["q"], x["k"], x["v"], x["g"], x["beta"], None, False, "chunk")
    torch.autograd.backward(o, do)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--expand-v", type=float, default=2.0)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps of each model")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    _core.set_num_threads(args.threads)
    model, baseline = make_models(args)
    batch = torch.randint(0, args.vocab, (args.batch, args.seq + 1),
                          generator=torch.Generator().manual_seed(1))
    diff = gradient_difference(model, baseline, batch)
    runs = [("linattn (C++ chunk_gated_delta_rule)", model),
            ("PyTorch chunked gated delta rule", baseline)]
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for _, m in runs]
    for (_, m), opt in zip(runs, optimizers):
        train_step(m, opt, batch)  # warm-up: allocations, optimizer state
    # The mixer alone (forward + backward of one layer's recurrence, the same shapes).
    x = mixer_inputs(args, torch.Generator().manual_seed(2))
    do = torch.randn(x["v"].shape)
    layers = [model.blocks[0].mixer, baseline.blocks[0].mixer]
    steps = [lambda m=m: train_step(m, opt, batch) for (_, m), opt in zip(runs, optimizers)]
    steps += [lambda layer=layer: mixer_step(layer.recurrence, x, do) for layer in layers]
    for step in steps[2:]:
        step()  # warm-up
    times: list[list[float]] = [[] for _ in steps]
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for step, seconds in zip(steps, times):
            start_time = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start_time)
    load = max(load, os.getloadavg()[0])

    params = sum(p.numel() for p in model.parameters())
    print(f"training step (forward + backward + AdamW), {args.layers}-layer Gated DeltaNet LM, "
          f"d_model={args.d_model}, {args.heads} heads (K={args.d_model // args.heads}, "
          f"V={int(args.d_model // args.heads * args.expand_v)}), short conv 4, vocab "
          f"{args.vocab}, {params / 1e6:.2f}M parameters, B={args.batch}, T={args.seq}, "
          f"{args.threads} threads, {args.rounds} alternating rounds, {platform.machine()}, "
          f"torch {torch.__version__}, load average up to {load:.1f}")
    names = [name for name, _ in runs] + [f"mixer only: {name}" for name, _ in runs]
    for name, seconds in zip(names, times):
        best = min(seconds)
        print(f"  {name:52s} fastest {best * 1e3:8.1f} ms "
              f"({args.batch * args.seq / best:7.0f} tokens/s), median "
              f"{statistics.median(seconds) * 1e3:8.1f} ms")
    best = [min(seconds) for seconds in times]
    print(f"  training step: linattn {best[1] / best[0]:.2f}x faster than the PyTorch chunked "
          f"mixer; the mixer alone (fwd + bwd of one layer): {best[3] / best[2]:.2f}x")
    print(f"  gradient difference between the two models: {diff:.2e} (relative, all parameters)")


if __name__ == "__main__":
    main()
