"""Tiny random configs of transformers' linear-attention / conv model families, built from
transformers' own config classes (no downloads), shared by the tests and the benchmark.

Each row: the family name, the kernel packages its layers look up, and a function returning
(CausalLM class, config). Kept small enough for a 2-core CI: vocab 256, hidden 128, 2 layers
(one linear-attention / conv layer and one softmax attention layer where the family is a
hybrid), 4 attention heads / 2 KV heads of 32, MoE 4 experts top-2.
"""

from __future__ import annotations

import transformers as tf

from torch_fallbacks import import_with_torch_fallbacks

VOCAB = 256
_COMMON = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
               eos_token_id=2, tie_word_embeddings=False)


def qwen3_next():
    return tf.Qwen3NextForCausalLM, tf.Qwen3NextConfig(
        **_COMMON, head_dim=32, moe_intermediate_size=64, shared_expert_intermediate_size=64,
        num_experts=4, num_experts_per_tok=2, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=32, linear_value_head_dim=32,
        layer_types=["linear_attention", "full_attention"])


def qwen3_5():
    return tf.Qwen3_5ForCausalLM, tf.Qwen3_5TextConfig(
        **_COMMON, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=32, linear_value_head_dim=32,
        layer_types=["linear_attention", "full_attention"])


def kimi_linear():
    return tf.KimiLinearForCausalLM, tf.KimiLinearConfig(  # MLA: as many KV heads as heads
        **{**_COMMON, "num_key_value_heads": 4}, moe_intermediate_size=64, num_local_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1, kv_lora_rank=32, q_lora_rank=None, qk_rope_head_dim=16,
        qk_nope_head_dim=16, v_head_dim=32, linear_head_dim=32, linear_num_heads=4,
        layer_types=["linear_attention", "full_attention"], mlp_layer_types=["dense", "sparse"])


def olmo_hybrid():
    return tf.OlmoHybridForCausalLM, tf.OlmoHybridConfig(
        **_COMMON, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32,
        linear_value_head_dim=32, layer_types=["linear_attention", "full_attention"])


def lfm2():
    return tf.Lfm2ForCausalLM, tf.Lfm2Config(
        **_COMMON, block_auto_adjust_ff_dim=False, layer_types=["conv", "full_attention"])


def qwen3_5_moe():
    return tf.Qwen3_5MoeForCausalLM, tf.Qwen3_5MoeTextConfig(
        **{k: v for k, v in _COMMON.items() if k != "intermediate_size"}, head_dim=32,
        moe_intermediate_size=64, shared_expert_intermediate_size=64, num_experts=4,
        num_experts_per_tok=2, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=32, linear_value_head_dim=32,
        layer_types=["linear_attention", "full_attention"])


def bailing_hybrid():
    return tf.BailingHybridForCausalLM, tf.BailingHybridConfig(  # MLA: as many KV heads as heads
        **{**_COMMON, "num_key_value_heads": 4}, moe_intermediate_size=64, num_local_experts=4,
        num_experts_per_tok=2, n_group=1, topk_group=1, n_shared_experts=1,
        first_k_dense_replace=1, kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16,
        v_head_dim=32, head_dim=32, num_mtp_layers=0,
        layer_types=["linear_attention", "full_attention"])


def lfm2_moe():
    return tf.Lfm2MoeForCausalLM, tf.Lfm2MoeConfig(
        **_COMMON, moe_intermediate_size=64, num_dense_layers=1, num_experts=4,
        num_experts_per_tok=2, layer_types=["conv", "full_attention"])


# family -> (kernel packages its layers use, builder)
FAMILIES = {
    "qwen3_next": (("causal_conv1d", "fla"), qwen3_next),
    "qwen3_5": (("causal_conv1d", "fla"), qwen3_5),
    "kimi_linear": (("causal_conv1d", "fla"), kimi_linear),
    "olmo_hybrid": (("causal_conv1d", "fla"), olmo_hybrid),
    "lfm2": (("causal_conv1d",), lfm2),
    "qwen3_5_moe": (("causal_conv1d", "fla"), qwen3_5_moe),
    "bailing_hybrid": (("causal_conv1d", "fla"), bailing_hybrid),
    "lfm2_moe": (("causal_conv1d",), lfm2_moe),
}


def build(family: str, seed: int = 0):
    """The tiny random model of `family` in float32, eval mode, greedy generation unbounded by
    EOS (random weights would stop anywhere)."""
    import torch

    model_cls, config = FAMILIES[family][1]()
    torch.manual_seed(seed)
    model = model_cls(config).float().eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


import_with_torch_fallbacks(FAMILIES)
