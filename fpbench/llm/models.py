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


class LanguageModel(nn.Module):
    """A causal LM as the zoo holds it (the language twin of ``fpbench.models.ImageClassifier``): ``net`` is the
    transformers model and ``trunk`` the network whose weights transforms and white-box methods read. Token ids
    in, next-token logits ``[N, T, vocab]`` out, so the harness's shared code (training loop, child checks,
    pruning, quantization) treats it like any other module; :meth:`task_loss` and :meth:`count_correct` are the
    language task's loss and accuracy, which ``fpbench.train`` uses in place of a classifier's."""

    def __init__(self, net: PreTrainedModel) -> None:
        super().__init__()
        self.net = net

    @property
    def trunk(self) -> nn.Module:
        return self.net

    @property
    def config(self) -> Any:
        return self.net.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=x).logits

    def task_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy (transformers shifts the labels inside; -100 marks padding)."""
        return self.net(input_ids=x, labels=y).loss

    @torch.no_grad()
    def count_correct(self, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        """(greedy next-token predictions that are right, tokens predicted) on blocks ``x`` with targets ``y``."""
        pred = self(x)[:, :-1].argmax(-1)
        target = y[:, 1:]
        keep = target != -100
        return int((pred[keep] == target[keep]).sum()), int(keep.sum())


def build_from_spec(arch: dict[str, Any], spec: Any) -> LanguageModel:
    """``fpbench.models.build_module``'s builder ``causal_lm``: the architecture on the zoo's tokenizer."""
    from fpbench.llm.text import tokenizer_of

    tok = tokenizer_of(spec)
    return LanguageModel(build_lm(arch, len(tok), tok.pad_token_id, tok.eos_token_id))


def build_smollm2(arch: dict[str, Any], spec: Any) -> LanguageModel:
    """``fpbench.models.build_module``'s builder ``smollm2``: SmolLM2-135M-Instruct with its pretrained weights
    (``fpbench.llm.pretrained``); the zoo's data must be tokenized by its tokenizer (``data.tokenizer: smollm2``)."""
    from fpbench.llm.pretrained import load_smollm2

    if (spec.input or {}).get("tokenizer") != "smollm2":
        raise ConfigError("builder smollm2: the zoo's text is not tokenized by SmolLM2's tokenizer; set "
                          "data.tokenizer: smollm2 (the model reads its own 49152 tokens, not bytes)")
    return LanguageModel(load_smollm2()[0])


def build_snapshot(arch: dict[str, Any], spec: Any) -> LanguageModel:
    """``fpbench.models.build_module``'s builder ``hf_snapshot`` (the GPU tier ``zoo=llm_leafbench``): refuses with
    what is missing. Each pretrained family has its own tokenizer, and a zoo's text is tokenized once for all its
    models; loading the snapshots would score models on text they cannot read."""
    from pathlib import Path

    path = Path(str(arch.get("path", "")))
    if not (path / "config.json").is_file():
        raise ConfigError(f"hf_snapshot: no snapshot at '{path}': download {arch.get('repo', 'the model')} on a "
                          f"networked machine (huggingface-cli download {arch.get('repo', '<repo>')} --local-dir "
                          f"{path}) and copy it here")
    raise ConfigError("hf_snapshot: each pretrained family reads text with its own tokenizer, and a zoo tokenizes its "
                      "text once, for every model it holds (data.tokenizer: byte or smollm2); a zoo of several "
                      "families with different tokenizers is not supported yet, so this tier can only be listed "
                      "(dry_run=true)")


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a :class:`LanguageModel` (or the model itself)."""
    return model.net if isinstance(model, LanguageModel) else model


def family_of(model: nn.Module) -> str:
    """The family of a model :func:`build_lm` made (from its transformers config)."""
    kind = getattr(getattr(hf_model(model), "config", None), "model_type", "")
    if kind not in FAMILIES:
        raise ConfigError(f"not a language model of a known family (model_type '{kind}'); valid: {', '.join(FAMILIES)}")
    return kind


# Reads one module's weight: its dense effective weight (``canonical_weights``) or its gradient.
Read = Callable[[nn.Module], torch.Tensor]


def _gpt2_weights(model: nn.Module, read: Read) -> dict[str, torch.Tensor]:
    t = model.transformer
    out = {"embed": read(t.wte), "norm": read(t.ln_f), "lm_head": read(model.lm_head)}
    for i, block in enumerate(t.h):
        q, k, v = read(block.attn.c_attn).T.chunk(3, dim=0)  # Conv1D stores [in, 3 * out]
        out |= {f"layers.{i}.attn.q": q, f"layers.{i}.attn.k": k, f"layers.{i}.attn.v": v,
                f"layers.{i}.attn.o": read(block.attn.c_proj).T, f"layers.{i}.mlp.up": read(block.mlp.c_fc).T,
                f"layers.{i}.mlp.down": read(block.mlp.c_proj).T, f"layers.{i}.norm_attn": read(block.ln_1),
                f"layers.{i}.norm_mlp": read(block.ln_2)}
    return out


def _llama_weights(model: nn.Module, read: Read) -> dict[str, torch.Tensor]:
    m = model.model
    out = {"embed": read(m.embed_tokens), "norm": read(m.norm), "lm_head": read(model.lm_head)}
    for i, layer in enumerate(m.layers):
        a, f = layer.self_attn, layer.mlp
        out |= {f"layers.{i}.attn.{n}": read(getattr(a, f"{n}_proj")) for n in ("q", "k", "v", "o")}
        out |= {f"layers.{i}.mlp.{n}": read(getattr(f, f"{n}_proj")) for n in ("gate", "up", "down")}
        out |= {f"layers.{i}.norm_attn": read(layer.input_layernorm),
                f"layers.{i}.norm_mlp": read(layer.post_attention_layernorm)}
    return out


def _dense(module: nn.Module) -> torch.Tensor:
    """The weight a layer computes with: LoRA deltas added, quantized codes dequantized (``fpbench.weights``);
    a norm's or an embedding's own weight."""
    from fpbench.weights import dense_weight

    w = dense_weight(module)
    return w if w is not None else module.weight


def _canonical(model: nn.Module, read: Read) -> dict[str, torch.Tensor]:
    net = hf_model(model)
    return _gpt2_weights(net, read) if family_of(net) == "gpt2" else _llama_weights(net, read)


def canonical_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's effective weights under the canonical names (a quantized or LoRA-wrapped child's too)."""
    return _canonical(model, _dense)


def canonical_gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each canonical weight's gradient after a backward pass (zeros where a parameter got none)."""
    def grad(module: nn.Module) -> torch.Tensor:
        p = getattr(module, "base_layer", module).weight
        return p.grad if p.grad is not None else torch.zeros_like(p)

    return _canonical(model, grad)


def num_layers(model: nn.Module) -> int:
    cfg = hf_model(model).config
    return int(cfg.num_hidden_layers if family_of(model) != "gpt2" else cfg.n_layer)
