"""A CLIP-style child (open_clip) whose vision tower is a timm trunk, queried as a zero-shot classifier.

The model is ``open_clip.model.CLIP`` built from open_clip's own model-config format (``embed_dim``,
``vision_cfg`` with ``timm_model_name``, ``text_cfg``), recorded whole in ``ModelSpec.arch["open_clip"]`` so
the store rebuilds it. open_clip creates a timm vision tower by *name* only (no kwargs), so the parent's trunk
(a timm net with custom layers/channels, or timm's VGG class with a custom layer list) is registered in timm's
model registry under a name derived from the parent's arch: open_clip's ``TimmModel`` then builds exactly the
parent's network, whose weights copy into ``model.visual.trunk`` name for name.

:class:`ClipClassifier` is what the zoo stores and methods query: images in [0, 1], normalised once here with
the parent's input mean/std (the trunk was trained on those), logits = ``logit_scale * cos(image_emb,
class_text_emb)`` where a class's text embedding is the mean of its normalised prompt embeddings (CLIP's
prompt ensembling). ``features(x)`` is the image embedding (the layer the logits are computed from, what a
CLIP user gets), and ``trunk`` is the timm vision trunk, so white-box methods read its weights under the
parent's names.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import timm
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from timm.models import register_model
from torch import nn

from fpbench.api import ModelSpec, NotApplicable
from fpbench.utils import stable_hash

# Parent builders whose network is a plain timm module open_clip's TimmModel can host (it calls
# reset_classifier(0, global_pool=...) and forward on it). "timm_pretrained" builds the same timm net: its
# pretrained weights are overwritten by the parent's anyway, so the trunk is built without them.
HOSTABLE_BUILDERS = ("timm", "timm_vgg", "timm_pretrained")
TRUNK_PREFIX = "fpbench_trunk_"


def trunk_model_name(parent_arch: dict[str, Any], num_classes: int, channels: int) -> str:
    """The timm registry name of a parent's trunk: a pure function of what builds it."""
    return TRUNK_PREFIX + stable_hash({"arch": parent_arch, "num_classes": num_classes, "channels": channels}, 12)


def _parent_net(parent_arch: dict[str, Any], num_classes: int, input_spec: dict[str, Any]) -> nn.Module:
    from fpbench.models import build_module

    arch = dict(parent_arch)
    if arch.get("builder") == "timm_pretrained":
        arch = {k: v for k, v in arch.items() if k != "weights"} | {"builder": "timm"}
    spec = ModelSpec(arch=arch, num_classes=num_classes, class_names=[str(i) for i in range(num_classes)],
                     input=dict(input_spec))
    return build_module(spec).trunk  # type: ignore[return-value]


def register_trunk(name: str, parent_arch: dict[str, Any], num_classes: int, input_spec: dict[str, Any]) -> str:
    """Register the parent's timm network under ``name`` so open_clip's TimmModel can create it by name."""
    if parent_arch.get("builder", "timm") not in HOSTABLE_BUILDERS:
        raise NotApplicable(
            f"vision2mm: open_clip's timm tower cannot host a '{parent_arch.get('builder')}' network; hostable "
            f"builders: {', '.join(HOSTABLE_BUILDERS)}")
    if timm.is_model(name):
        return name
    frozen = (copy.deepcopy(parent_arch), int(num_classes), dict(input_spec))

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name}: a parent's trunk has no pretrained tag; its weights come from the parent")
        net = _parent_net(*frozen)  # open_clip resets the classifier and pool itself
        if not hasattr(net, "default_cfg"):  # set by timm.create_model, not by a direct class call (VGG);
            net.pretrained_cfg = net.default_cfg = {}  # TimmModel reads it (an empty cfg = no pool size)
        return net

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    register_model(entrypoint)
    return name


def open_clip_config(trunk_name: str, image_size: int, embed_dim: int, text_width: int, text_heads: int,
                     text_layers: int, context_length: int) -> dict[str, Any]:
    """A tiny CLIP in open_clip's model-config format (the JSON ``open_clip.add_model_config`` reads)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"timm_model_name": trunk_name, "timm_model_pretrained": False, "timm_pool": "avg",
                       "timm_proj": "linear", "image_size": image_size},
        "text_cfg": {"context_length": context_length, "vocab_size": tokenizer(context_length).vocab_size,
                     "width": text_width, "heads": text_heads, "layers": text_layers},
    }


@lru_cache(maxsize=4)
def tokenizer(context_length: int) -> SimpleTokenizer:
    """open_clip's bundled BPE tokenizer (no network), one per context length."""
    return SimpleTokenizer(context_length=context_length)


def class_prompts(class_names: list[str], templates: list[str]) -> list[str]:
    """Prompts ordered class-major: all templates of class 0, then class 1, ..."""
    return [t.format(c) for c in class_names for t in templates]


class ClipClassifier(nn.Module):
    """An open_clip CLIP behind input normalisation, with a zero-shot text head over ``class_names``."""

    def __init__(self, clip: CLIP, class_names: list[str], templates: list[str], mean: list[float],
                 std: list[float], context_length: int) -> None:
        super().__init__()
        self.clip = clip
        self.class_names = list(class_names)
        self.templates = list(templates)
        self.tokenizer = tokenizer(context_length)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        # Prompt tokens are a function of the spec (class names, templates): rebuilt, never stored.
        self.register_buffer("prompt_tokens", self.tokenizer(class_prompts(class_names, templates)), persistent=False)

    @property
    def trunk(self) -> nn.Module:
        return self.clip.visual.trunk

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.mean.device)

    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings of images in [0, 1]."""
        return self.clip.encode_image(self.normalize(x), normalize=normalize)

    def class_embeddings(self) -> torch.Tensor:
        """[num_classes, embed_dim]: each class's normalised mean of its normalised prompt embeddings."""
        text = self.clip.encode_text(self.prompt_tokens, normalize=True)
        text = text.view(len(self.class_names), len(self.templates), -1).mean(1)
        return F.normalize(text, dim=-1)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=100.0)  # CLIP's clamp: a temperature no lower than 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale() * self.encode_image(x) @ self.class_embeddings().T

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x, normalize=False)


def _fit_projection(clip: CLIP) -> None:
    """Size the image projection by what the trunk's head really outputs.

    open_clip's TimmModel sizes its projection by ``trunk.num_features``, but timm nets whose head has its own
    pre-logits block (VGG's ConvMlp: ``head_hidden_size`` = 4096) pool to a different width.
    """
    trunk, proj = clip.visual.trunk, getattr(clip.visual.head, "proj", None)
    width = int(getattr(trunk, "head_hidden_size", trunk.num_features))
    if isinstance(proj, nn.Linear) and proj.in_features != width:
        clip.visual.head.proj = nn.Linear(width, proj.out_features, bias=proj.bias is not None)


def build_clip_classifier(arch: dict[str, Any], spec: ModelSpec) -> ClipClassifier:
    """The ``"clip"`` model builder: a freshly initialised :class:`ClipClassifier` of ``arch``.

    ``arch``: ``open_clip`` (the model config), ``trunk`` (the parent's arch), ``prompt_templates``.
    """
    cfg = copy.deepcopy(arch["open_clip"])
    register_trunk(cfg["vision_cfg"]["timm_model_name"], arch["trunk"], spec.num_classes, spec.input)
    clip = CLIP(**cfg)
    _fit_projection(clip)
    return ClipClassifier(clip, spec.class_names, list(arch["prompt_templates"]), spec.input["mean"],
                          spec.input["std"], int(cfg["text_cfg"]["context_length"]))


# Explicit, so timm's register_model appends each trunk name here instead of replacing the list.
__all__ = ["ClipClassifier", "build_clip_classifier", "register_trunk", "tokenizer"]
