"""Training-step benchmark (issue 5): a small Gated DeltaNet LM, linattn's C++ mixer against the
same model with a PyTorch chunked formulation of the mixer, measured in the same run.

    .venv/bin/python -m linattn.bench_train --threads 2            # B=8, T=512, 4 x d256 x 4 heads

One step = forward + backward + AdamW on next-token cross-entropy. Both models hold the same
weights and see the same batch; the only difference is GatedDeltaNet.recurrence: linattn's
chunk_gated_delta_rule (C++ forward and backward) or ``torch_chunk_gated_delta_rule`` below
(PyTorch ops, differentiated by autograd). The run prints both step times, their ratio and the
relative difference of the two models' gradients (a check that they compute the same function).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch
import torch.nn.functional as F

from . import _core
from .bench import QuietGuard, time_call
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
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement")
    parser.add_argument("--no-guard", action="store_true",
                        help="do not repeat measurements disturbed by other processes")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    _core.set_num_threads(args.threads)
    model, baseline = make_models(args)
    batch = torch.randint(0, args.vocab, (args.batch, args.seq + 1),
                          generator=torch.Generator().manual_seed(1))
    diff = gradient_difference(model, baseline, batch)
    guard = QuietGuard(limit=10.0, enabled=not args.no_guard)
    rows = []
    for name, m in (("linattn (C++ chunk_gated_delta_rule)", model),
                    ("PyTorch chunked gated delta rule", baseline)):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        train_step(m, opt, batch)  # warm-up: allocations, optimizer state
        seconds, note = guard.measure(
            lambda: time_call(lambda: train_step(m, opt, batch), args.seconds, 3))
        rows.append((name, seconds, note))

    params = sum(p.numel() for p in model.parameters())
    print(f"training step (forward + backward + AdamW), {args.layers}-layer Gated DeltaNet LM, "
          f"d_model={args.d_model}, {args.heads} heads (K={args.d_model // args.heads}, "
          f"V={int(args.d_model // args.heads * args.expand_v)}), vocab {args.vocab}, "
          f"{params / 1e6:.2f}M parameters, B={args.batch}, T={args.seq}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    for name, seconds, note in rows:
        tokens = args.batch * args.seq / seconds
        print(f"  {name:40s} {seconds * 1e3:9.1f} ms/step {tokens:10.0f} tokens/s {note}")
    print(f"  speedup of linattn over the PyTorch chunked mixer: {rows[1][1] / rows[0][1]:.2f}x")
    print(f"  gradient difference between the two models: {diff:.2e} (relative, all parameters)")


if __name__ == "__main__":
    main()
