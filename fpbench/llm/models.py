"""Small causal language models of several families, built from transformers' own configurations, and their
weights under one canonical naming so that a white-box method compares layers across architectures.

Families: ``llama`` (LlamaForCausalLM), ``qwen2`` (Qwen2ForCausalLM: biased q/k/v), ``mistral``
(MistralForCausalLM) and ``gpt2`` (GPT2LMHeadModel: fused attention, Conv1D layers, learned positions, tied
embeddings). An architecture is a dict: ``{family, hidden, layers, heads, kv_heads, intermediate, block_size}``.

Canonical names (every matrix ``[out_features, in_features]``, as ``nn.Linear`` stores it):
``embed``, ``layers.{i}.attn.{q,k,v,o}``, ``layers.{i}.mlp.{gate,up,down}`` (GPT-2 has no gate),
``layers.{i}.norm_attn``, ``layers.{i}.norm_mlp``, ``norm``, ``lm_head``. GPT-2's fused ``c_attn`` is split
into q, k and v, and its Conv1D weights are transposed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from fpbench.errors import ConfigError

FAMILIES = ("llama", "qwen2", "mistral", "gpt2")
_LLAMA_LIKE = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
               "mistral": (MistralConfig, MistralForCausalLM)}


def _arch_value(arch: dict[str, Any], key: str) -> int:
    if key not in arch:
        raise ConfigError(f"language-model architecture {arch}: missing '{key}' (give family, hidden, layers, heads, "
                          "intermediate, block_size; kv_heads optional)")
    return int(arch[key])


def build_lm(arch: dict[str, Any], vocab_size: int, pad_id: int, eos_id: int) -> PreTrainedModel:
    """A freshly initialised causal LM of ``arch`` (initialise under a seed: ``fpbench.utils.seed_everything``)."""
    family = str(arch.get("family", ""))
    if family not in FAMILIES:
        raise ConfigError(f"unknown language-model family '{family}'; valid: {', '.join(FAMILIES)}")
    hidden, layers, heads = (_arch_value(arch, k) for k in ("hidden", "layers", "heads"))
    block = _arch_value(arch, "block_size")
    if hidden % heads:
        raise ConfigError(f"language-model architecture {arch}: hidden ({hidden}) must be a multiple of heads ({heads})")
    common = {"vocab_size": vocab_size, "pad_token_id": pad_id, "eos_token_id": eos_id, "bos_token_id": eos_id}
    if family == "gpt2":
        cfg = GPT2Config(n_positions=block, n_embd=hidden, n_layer=layers, n_head=heads,
                         n_inner=_arch_value(arch, "intermediate"), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         **common)
        return GPT2LMHeadModel(cfg)
    config_cls, model_cls = _LLAMA_LIKE[family]
    kv = int(arch.get("kv_heads", heads))
    if heads % kv:
        raise ConfigError(f"language-model architecture {arch}: heads ({heads}) must be a multiple of kv_heads ({kv})")
    cfg = config_cls(hidden_size=hidden, intermediate_size=_arch_value(arch, "intermediate"), num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=block,
                     tie_word_embeddings=bool(arch.get("tie_embeddings", False)), **common)
    return model_cls(cfg)


def build_from_spec(arch: dict[str, Any], spec: Any) -> PreTrainedModel:
    """``fpbench.models.build_module``'s builder ``causal_lm``: the architecture on the shared byte tokenizer."""
    from fpbench.llm.text import byte_tokenizer

    tok = byte_tokenizer()
    return build_lm(arch, len(tok), tok.pad_token_id, tok.eos_token_id)


def family_of(model: nn.Module) -> str:
    """The family of a model :func:`build_lm` made (from its transformers config)."""
    kind = getattr(getattr(model, "config", None), "model_type", "")
    if kind not in FAMILIES:
        raise ConfigError(f"not a language model of a known family (model_type '{kind}'); valid: {', '.join(FAMILIES)}")
    return kind


Get = Callable[[nn.Parameter], torch.Tensor]


def _gpt2_weights(model: nn.Module, get: Get) -> dict[str, torch.Tensor]:
    t = model.transformer
    out = {"embed": get(t.wte.weight), "norm": get(t.ln_f.weight), "lm_head": get(model.lm_head.weight)}
    for i, block in enumerate(t.h):
        q, k, v = get(block.attn.c_attn.weight).T.chunk(3, dim=0)  # Conv1D stores [in, 3 * out]
        out |= {f"layers.{i}.attn.q": q, f"layers.{i}.attn.k": k, f"layers.{i}.attn.v": v,
                f"layers.{i}.attn.o": get(block.attn.c_proj.weight).T, f"layers.{i}.mlp.up": get(block.mlp.c_fc.weight).T,
                f"layers.{i}.mlp.down": get(block.mlp.c_proj.weight).T, f"layers.{i}.norm_attn": get(block.ln_1.weight),
                f"layers.{i}.norm_mlp": get(block.ln_2.weight)}
    return out


def _llama_weights(model: nn.Module, get: Get) -> dict[str, torch.Tensor]:
    m = model.model
    out = {"embed": get(m.embed_tokens.weight), "norm": get(m.norm.weight), "lm_head": get(model.lm_head.weight)}
    for i, layer in enumerate(m.layers):
        a, f = layer.self_attn, layer.mlp
        out |= {f"layers.{i}.attn.{n}": get(getattr(a, f"{n}_proj").weight) for n in ("q", "k", "v", "o")}
        out |= {f"layers.{i}.mlp.{n}": get(getattr(f, f"{n}_proj").weight) for n in ("gate", "up", "down")}
        out |= {f"layers.{i}.norm_attn": get(layer.input_layernorm.weight),
                f"layers.{i}.norm_mlp": get(layer.post_attention_layernorm.weight)}
    return out


def canonical_weights(model: nn.Module, get: Get | None = None) -> dict[str, torch.Tensor]:
    """The model's weights under the canonical names; ``get`` maps each parameter first (default: the
    parameter itself; :func:`canonical_gradients` passes its gradient)."""
    get = get or (lambda p: p)
    return _gpt2_weights(model, get) if family_of(model) == "gpt2" else _llama_weights(model, get)


def canonical_gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each canonical weight's gradient after a backward pass (zeros where a parameter got none)."""
    return canonical_weights(model, lambda p: p.grad if p.grad is not None else torch.zeros_like(p))


def num_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers if family_of(model) != "gpt2" else model.config.n_layer)
