"""The offline pretrained parent: ImageNet EfficientNet-Lite0 weights really recognise photos once mapped to timm."""

from __future__ import annotations

import pytest
import timm
import torch
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from fpbench.api import ModelSpec
from fpbench.config import load_option
from fpbench.models import build_module
from fpbench.pretrained import imagenet_state_dict


def _top5(model: torch.nn.Module, image) -> list[str]:
    x = torch.tensor(image).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear")
    with torch.inference_mode():
        logits = model((x - 0.5) / 0.5)[0]
    info = ImageNetInfo()
    return [info.index_to_description(int(i)) for i in logits.topk(5).indices]


def test_mapped_imagenet_weights_recognise_sample_photos() -> None:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(imagenet_state_dict("efficientnet-lite0"), strict=True)
    temple, flower = load_sample_images().images  # scikit-learn's two photos: a Chinese temple and a flower
    assert any(w in " ".join(_top5(model, temple)) for w in ("bell cote", "stupa", "monastery", "palace", "pagoda"))
    assert "daisy" in _top5(model, flower)


def test_pretrained_builder_keeps_imagenet_trunk_for_a_new_task() -> None:
    zoo = load_option("zoo", "tiny_pretrained")
    spec = ModelSpec(arch=zoo["archs"]["effnet_lite0"], num_classes=10, class_names=[str(i) for i in range(10)],
                     input={"channels": 1, "size": 32, "mean": [0.5], "std": [0.5]})
    model = build_module(spec)
    ref = imagenet_state_dict("efficientnet-lite0")
    own = model.trunk.state_dict()
    assert torch.equal(own["blocks.3.0.conv_pw.weight"], ref["blocks.3.0.conv_pw.weight"])
    assert torch.allclose(own["conv_stem.weight"], ref["conv_stem.weight"].sum(1, keepdim=True))  # RGB -> gray
    assert own["classifier.weight"].shape == (10, 1280)


def test_unknown_pretrained_weights_name_the_valid_ones() -> None:
    from fpbench.api import ConfigError

    with pytest.raises(ConfigError, match="efficientnet-lite0"):
        imagenet_state_dict("resnet-9000")
