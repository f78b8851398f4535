"""linattn.layers and linattn.models: prefill + decode equals one forward; training works."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from linattn import layers, models  # noqa: E402

# Small configurations of every layer, with and without short convolutions.
LAYER_CONFIGS = {
    "gated_deltanet": dict(head_dim=16, num_heads=2, num_v_heads=4, expand_v=1.5),
    "kda": dict(head_dim=16, num_heads=2, num_v_heads=4, lower_bound=-5.0),
    "deltanet": dict(num_heads=4, use_gate=True, use_short_conv=False),
    "gla": dict(num_heads=4, expand_k=0.5, clamp_min=-5.0, use_short_conv=True, conv_bias=True),
    "hgrn2": dict(expand_ratio=16, use_short_conv=True),
    "linear_attn": dict(num_heads=4, feature_map="hedgehog", norm_q=True, norm_k=True),
    "linear_attn_normalised": dict(num_heads=4, feature_map="elu", do_feature_map_norm=True),
    "mamba2": dict(state_size=16, head_dim=16, n_groups=2),
    "mamba2_neg": dict(state_size=16, head_dim=16, n_groups=2, allow_neg_eigval=True),
    "gated_deltaproduct": dict(head_dim=16, num_heads=2, num_householder=2,
                               allow_neg_eigval=True, use_forget_gate=True),
    "attention": dict(num_heads=4, num_kv_heads=2),
    "lla": dict(num_heads=4, ridge_lambda=1.0),
    "lla_learned": dict(num_heads=4, learn_ridge_lambda=True),
    "rwkv7": dict(head_dim=16, decay_low_rank_dim=8, a_low_rank_dim=8, gate_low_rank_dim=16),
}
HIDDEN = 64


def make_layer(name):
    mixer = name.removesuffix("_neg").removesuffix("_learned").removesuffix("_normalised")
    return layers.MIXERS[mixer](hidden_size=HIDDEN, **LAYER_CONFIGS[name])


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", sorted(LAYER_CONFIGS))
def test_layer_prefill_then_steps_equals_forward(name):
    """forward over T tokens == forward over a prefix (keeping the state) + step() per token,
    and the state after the steps equals the state of the full forward."""
    torch.manual_seed(0)
    layer = make_layer(name)
    x = torch.randn(2, 70, HIDDEN)
    full, full_state = layer(x, output_state=True)
    prefix, state = layer(x[:, :66], output_state=True)
    steps = [prefix]
    for t in range(66, 70):
        o, state = layer.step(x[:, t], state)
        steps.append(o[:, None])
    # fp32 forms against each other: each within ~1e-6 of the fp64 oracle, through the norms
    # and projections of the layer.
    assert rel_err(torch.cat(steps, 1), full) <= 1e-5
    recurrent = state.recurrent if isinstance(state.recurrent, tuple) else (state.recurrent,)
    full_recurrent = (full_state.recurrent if isinstance(full_state.recurrent, tuple)
                      else (full_state.recurrent,))  # attention: the KV cache (k, v)
    for got, want in zip(recurrent, full_recurrent, strict=True):
        assert rel_err(got, want) <= 1e-5
    assert (state.conv is None) == (full_state.conv is None) == (
        not layer.use_short_conv and name != "rwkv7")  # rwkv7: the token-shift state
    for cache, full_cache in zip(state.conv or (), full_state.conv or ()):
        assert rel_err(cache, full_cache) <= 1e-6  # the last W inputs (projected one by one)


@pytest.mark.parametrize("name", sorted(LAYER_CONFIGS))
def test_layer_trains(name):
    """Every parameter gets a finite gradient through the C++ backward."""
    torch.manual_seed(0)
    layer = make_layer(name)
    o, _ = layer(torch.randn(2, 20, HIDDEN))
    o.square().mean().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_mamba2_negative_decay_is_the_signed_recurrence():
    """Mamba2(allow_neg_eigval=True) runs S_t = a_t S_{t-1} + B_t (dt_t x_t)^T with
    a_t = 2 exp(dt_t A) - 1 in (-1, 1): its final state equals that token loop's."""
    torch.manual_seed(0)
    m = layers.Mamba2(hidden_size=32, state_size=8, head_dim=8, n_groups=2,
                      allow_neg_eigval=True).double()
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    _, state = m(x, output_state=True)
    with torch.no_grad():
        h = m._project(x)
        h["xBC"], _ = m.conv1d(h["xBC"], None, False, "chunk")
        xs, B, C = h["xBC"].split([m.intermediate_size, 2 * 8, 2 * 8], -1)
        dt = torch.nn.functional.softplus(h["dt"].float() + m.dt_bias).double()
        a = 2 * torch.exp(-m.A_log.exp() * dt) - 1
        xs = xs.unflatten(-1, (m.num_heads, 8))
        B = B.unflatten(-1, (2, 8)).repeat_interleave(m.num_heads // 2, 2)
        S = torch.zeros(2, m.num_heads, 8, 8, dtype=torch.float64)
        for t in range(30):
            S = a[:, t, :, None, None] * S + B[:, t, :, :, None] * (dt[:, t, :, None] * xs[:, t])[:, :, None, :]
    assert (a < 0).any() and (a > 0).any()
    assert rel_err(state.recurrent, S) <= 1e-6  # dt is computed in fp32 by the layer


def test_lla_layer_with_a_huge_ridge_is_the_attention_layer():
    """lambda -> inf gives softmax attention (algorithms.md §4.9): with the same weights, the
    LLA layer at lambda = 1e9 equals the Attention layer; at lambda = 1 it differs."""
    torch.manual_seed(0)
    attn = layers.Attention(hidden_size=HIDDEN, num_heads=4)
    x = torch.randn(2, 40, HIDDEN)
    want, _ = attn(x)
    for ridge, close in ((1e9, True), (1.0, False)):
        lla = layers.LocalLinearAttention(hidden_size=HIDDEN, num_heads=4, ridge_lambda=ridge)
        lla.load_state_dict(attn.state_dict())
        got, _ = lla(x)
        # fp32 forms; the LLA correction at lambda = 1e9 is ~1e-9 relative
        assert (rel_err(got, want) <= 1e-5) == close


def test_lla_learned_ridge_starts_at_ridge_lambda_and_gets_a_gradient():
    torch.manual_seed(0)
    learned = layers.LocalLinearAttention(hidden_size=HIDDEN, num_heads=4, ridge_lambda=3.0,
                                          learn_ridge_lambda=True)
    fixed = layers.LocalLinearAttention(hidden_size=HIDDEN, num_heads=4, ridge_lambda=3.0)
    fixed.load_state_dict(learned.state_dict(), strict=False)
    x = torch.randn(2, 20, HIDDEN)
    o, _ = learned(x)
    assert rel_err(o, fixed(x)[0]) <= 1e-6  # softplus(bias) = 3 for every token at init
    o.square().mean().backward()
    assert learned.lambda_proj.weight.grad.abs().max() > 0
    assert learned.lambda_proj.bias.grad.abs().max() > 0
    with pytest.raises(ValueError, match="ridge_lambda must be > 0"):
        layers.LocalLinearAttention(hidden_size=HIDDEN, num_heads=4, ridge_lambda=0.0)


def small_lm(mixer="gated_deltanet", layers_=None, seed=0):
    torch.manual_seed(seed)
    kwargs = ({name: LAYER_CONFIGS[name] for name in layers_} if layers_
              else LAYER_CONFIGS[mixer])
    config = models.LMConfig(vocab_size=50, hidden_size=HIDDEN, num_layers=2, mixer=mixer,
                             mixer_kwargs=kwargs, layers=layers_)
    return models.CausalLM(config).eval()


@pytest.mark.parametrize("mixer", ["gated_deltanet", "mamba2", "gated_deltaproduct", "rwkv7",
                                   "attention", "lla"])
def test_generate_logits_equal_a_full_forward(mixer):
    model = small_lm(mixer)
    prompt = torch.randint(0, 50, (2, 67))
    tokens, logits = model.generate(prompt, max_new_tokens=6)
    assert tokens.shape == (2, 73) and logits.shape == (2, 6, 50)
    with torch.no_grad():
        full, _ = model(tokens)
    assert rel_err(logits, full[:, 66:72]) <= 1e-5  # fp32 chunk vs recurrent forms
    assert torch.equal(tokens[:, 67:], full[:, 66:72].argmax(-1))


def test_hybrid_stack_and_sampling():
    model = small_lm(layers_=("gla", "hgrn2"))
    assert [type(b.mixer).__name__ for b in model.blocks] == ["GatedLinearAttention", "HGRN2"]
    g = torch.Generator().manual_seed(1)
    tokens, logits = model.generate(torch.randint(0, 50, (1, 5)), 4, temperature=1.0,
                                    generator=g)
    with torch.no_grad():
        full, _ = model(tokens)
    assert rel_err(logits, full[:, 4:8]) <= 1e-5
    with pytest.raises(ValueError, match="unknown mixer 'attn'"):
        models.LMConfig(layers=("gla", "attn"), num_layers=2).layer_mixers()


def test_hybrid_three_linear_to_one_attention():
    """A hybrid stack (3 Gated DeltaNet : 1 softmax attention block): generate()'s chunked
    prefill + recurrent/KV-cache decode equals a full forward."""
    torch.manual_seed(0)
    names = ("gated_deltanet",) * 3 + ("attention",)
    config = models.LMConfig(vocab_size=50, hidden_size=HIDDEN, num_layers=4, layers=names,
                             mixer_kwargs={n: LAYER_CONFIGS[n] for n in set(names)})
    model = models.CausalLM(config).eval()
    tokens, logits = model.generate(torch.randint(0, 50, (2, 30)), max_new_tokens=5)
    with torch.no_grad():
        full, _ = model(tokens)
    assert rel_err(logits, full[:, 29:34]) <= 1e-5


def test_lm_training_step_reduces_the_loss():
    model = small_lm("gated_deltanet").train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.randint(0, 50, (2, 17))
    losses = []
    for _ in range(3):
        logits, _ = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
