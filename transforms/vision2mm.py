"""Vision -> multimodal: an open_clip CLIP-style child whose vision tower starts from the parent's trunk.

The parent's timm network becomes ``model.visual.trunk`` of a tiny open_clip CLIP (weights copied exactly,
the classifier dropped: CLIP's image projection replaces it), a small text transformer is added, and the
whole is trained with open_clip's ``ClipLoss`` on image-caption pairs made from a split disjoint from the
parent's training data: each image's caption is its class name in a template drawn at random ("a photo of
a {}.", "a picture showing a {}.", ...). The vision tower may stay frozen for the first
``freeze_vision_steps`` steps (weights and BatchNorm statistics), so the new towers align to it before it
moves. The child is a classifier through zero-shot prompts (templates not used in training), see
``fpbench.clip_model``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from open_clip.loss import ClipLoss
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult, require
from fpbench.clip_model import (
    HOSTABLE_BUILDERS,
    ClipClassifier,
    build_clip_classifier,
    class_prompts,
    open_clip_config,
    trunk_model_name,
)
from fpbench.train import TrainConfig, TrainingParams, accuracy, train

TRAIN_TEMPLATES = (
    "a photo of a {}.", "a picture showing a {}.", "an image of a {}.", "a small picture of the {}.",
    "a grayscale photo of a {}.", "this is a {}.", "a close-up of a {}.", "a low resolution image of the {}.",
)
# Zero-shot prompts are held out from the training captions, so the head is queried with unseen phrasings.
PROMPT_TEMPLATES = ("a photo of the {}.", "an example of a {}.")


@dataclass(frozen=True)
class VisionToMultimodalParams(TrainingParams):
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4  # AdamW
    warmup_steps: int = 10
    freeze_vision_steps: int = 50  # first steps with the vision trunk locked (weights and BatchNorm statistics)
    embed_dim: int = 64  # CLIP embedding width
    text_width: int = 64  # the text transformer's width, heads and layers
    text_heads: int = 4
    text_layers: int = 2
    context_length: int = 16  # caption tokens
    train_token_embedding: bool = False  # the 49408-row token table (triples a CPU step's cost when trained)
    train_templates: tuple[str, ...] = TRAIN_TEMPLATES  # caption templates, one '{}' for the class name
    prompt_templates: tuple[str, ...] = PROMPT_TEMPLATES  # zero-shot prompts (held out from the captions)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.freeze_vision_steps <= self.steps, "freeze_vision_steps",
                f"must be in [0, steps={self.steps}], got {self.freeze_vision_steps}")
        for key in ("embed_dim", "text_width", "text_heads", "text_layers", "context_length"):
            require(getattr(self, key) > 0, key, f"must be a positive integer, got {getattr(self, key)!r}")
        require(self.text_width % self.text_heads == 0, "text_heads",
                f"must divide text_width={self.text_width}, got {self.text_heads}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        for key in ("train_templates", "prompt_templates"):
            templates = getattr(self, key)
            require(bool(templates) and all("{}" in t for t in templates), key,
                    "give a non-empty list of caption templates, each with one '{}' for the class name")


def copy_trunk(child: ClipClassifier, parent_trunk: nn.Module) -> list[str]:
    """Load the parent's trunk state into the child's vision trunk; returns the parent keys left out.

    Every child trunk tensor must come from the parent under the same name and shape (strict); only the
    parent's classifier may be left out, since CLIP's image projection replaces it.
    """
    parent_sd = parent_trunk.state_dict()
    child_sd = child.trunk.state_dict()
    missing = [k for k in child_sd if k not in parent_sd or parent_sd[k].shape != child_sd[k].shape]
    if missing:
        raise NotApplicable(f"vision2mm: the open_clip trunk has tensors the parent lacks or shapes differently: "
                            f"{missing[:5]}")
    child.trunk.load_state_dict({k: parent_sd[k] for k in child_sd}, strict=True)
    return sorted(k for k in parent_sd if k not in child_sd)


def trunk_difference(child_trunk: nn.Module, parent_trunk: nn.Module) -> tuple[float, float]:
    """(max |child - parent|, ||child - parent|| / ||parent||) over the child trunk's parameters."""
    parent = dict(parent_trunk.named_parameters())
    diff_sq, ref_sq, max_abs = 0.0, 0.0, 0.0
    for name, p in child_trunk.named_parameters():
        d = (p.detach().float().cpu() - parent[name].detach().float().cpu())
        diff_sq += float(d.pow(2).sum())
        ref_sq += float(parent[name].detach().float().pow(2).sum())
        max_abs = max(max_abs, float(d.abs().max()) if d.numel() else 0.0)
    return max_abs, math.sqrt(diff_sq / max(ref_sq, 1e-30))


class VisionToMultimodal(Transform):
    Params = VisionToMultimodalParams
    p: VisionToMultimodalParams

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        builder = spec.arch.get("builder", "timm")
        if spec.modality != "vision" or builder not in HOSTABLE_BUILDERS:
            raise NotApplicable(f"vision2mm needs a vision classifier built by one of {', '.join(HOSTABLE_BUILDERS)}; "
                                f"this parent is a '{spec.modality}' model built by '{builder}'")
        if spec.wrappers:
            kinds = ", ".join(w["kind"] for w in spec.wrappers)
            raise NotApplicable(f"vision2mm copies a plain timm trunk; this parent's layers are wrapped ({kinds})")

    def child_spec(self, spec: ModelSpec) -> ModelSpec:
        trunk_name = trunk_model_name(spec.arch, spec.num_classes, int(spec.input["channels"]))
        p = self.p
        cfg = open_clip_config(trunk_name, int(spec.input["size"]), p.embed_dim, p.text_width, p.text_heads,
                               p.text_layers, p.context_length)
        arch = {"builder": "clip", "name": f"clip-{spec.arch.get('name', spec.arch.get('builder'))}",
                "open_clip": cfg, "trunk": dict(spec.arch), "prompt_templates": list(p.prompt_templates)}
        return ModelSpec(arch=arch, num_classes=spec.num_classes, class_names=list(spec.class_names),
                         input=dict(spec.input), modality="vision-language", data_id=spec.data_id)

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        self.check(spec, model)
        parent_trunk = model.trunk  # type: ignore[attr-defined]
        child_spec = self.child_spec(spec)
        torch.manual_seed(ctx.seed)  # the new towers' initialisation
        child = build_clip_classifier(child_spec.arch, child_spec).to(ctx.device)
        dropped = copy_trunk(child, parent_trunk)
        init_max_abs, _ = trunk_difference(child.trunk, parent_trunk)

        steps, frozen = self.p.steps, self.p.freeze_vision_steps
        stats = self._train(child, ctx, frozen, steps)
        max_abs, rel_change = trunk_difference(child.trunk, parent_trunk)
        test = ctx.data.split("test")
        zero_shot = accuracy(child, test, ctx.device)  # through forward: the pipeline Subject.logits uses
        info = {
            "accuracy": zero_shot, "zero_shot_accuracy": zero_shot, "chance_accuracy": 1.0 / spec.num_classes,
            "parent_accuracy": accuracy(model, test, ctx.device), "steps": steps, "freeze_vision_steps": frozen,
            "clip_loss": stats, "trunk_init_max_abs_diff": init_max_abs, "trunk_dropped_keys": dropped,
            "trunk_rel_change": rel_change, "trunk_max_abs_change": max_abs,
            "trunk_parent_arch": spec.arch.get("name", spec.arch.get("builder")),
        }
        return TransformResult(child, child_spec, info)

    def _train(self, child: ClipClassifier, ctx: TransformContext, frozen: int, steps: int) -> float:
        """Contrastive training: ``frozen`` steps with the vision trunk locked, then the rest with all weights."""
        p = self.p
        templates = list(p.train_templates)
        names = child.class_names
        # [classes, templates, context]: caption tokens of every (class, template), drawn per image below.
        captions = child.tokenize(class_prompts(names, templates)).view(len(names), len(templates), -1)
        gen = torch.Generator().manual_seed(ctx.seed)
        clip_loss = ClipLoss()
        trunk_locked = {"on": False}

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if trunk_locked["on"]:
                child.trunk.eval()  # train() put it in train mode; a locked trunk keeps its BatchNorm statistics
            pick = torch.randint(len(templates), (y.shape[0],), generator=gen)
            text = child.clip.encode_text(captions[y.cpu(), pick].to(x.device), normalize=True)
            return clip_loss(child.encode_image(x), text, child.logit_scale())

        data = ctx.data.split(p.split)
        last = float("nan")
        for phase, (n, locked) in enumerate([(frozen, True), (steps - frozen, False)]):
            if n == 0:
                continue
            trunk_locked["on"] = locked
            for q in child.trunk.parameters():
                q.requires_grad_(not locked)
            cfg = TrainConfig(steps=n, lr=p.lr, batch_size=p.batch_size, optimizer="adamw",
                              weight_decay=p.weight_decay, warmup_steps=p.warmup_steps)
            # The token table (vocab 49408 x width) is most of the text tower; captions use a few dozen tokens whose
            # random rows already tell them apart, and updating the whole table triples the CPU cost of a step.
            child.clip.token_embedding.weight.requires_grad_(p.train_token_embedding)
            params = [q for q in child.parameters() if q.requires_grad]
            last = train(child, data, cfg, seed=ctx.seed + phase, device=ctx.device, loss_fn=loss_fn,
                         desc=f"vision2mm {'(trunk locked)' if locked else ''}", progress=ctx.progress,
                         params=params)["final_loss"]
        for q in child.parameters():
            q.requires_grad_(True)
        return last
