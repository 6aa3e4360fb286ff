"""ResNet from torchvision, registered under mnr's names and conventions.

torchvision's ResNet ends in adaptive average pooling, so it accepts any input size of at least
32 x 32; `input_size` is only recorded in the model's `InputConfig`. Weights are random unless
`pretrained=True`, which downloads torchvision's ImageNet weights (about 45 MB, so it needs
network access the first time; torch caches them under $TORCH_HOME) and normalises inputs with
ImageNet's statistics, which those weights were trained with.

torchvision is imported when a ResNet is built, not when mnr's models are registered: importing
it pulls in torch._dynamo (about a second), which predicting with a bn_cnn does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mnr.config import DEFAULT_INPUT_SIZE
from mnr.errors import MnrError
from mnr.models.registry import InputConfig, register_model

if TYPE_CHECKING:
    from torchvision.models import ResNet

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's pretrained weights expect
IMAGENET_STD = (0.229, 0.224, 0.225)


def _adapt_first_conv(model: ResNet, in_chans: int) -> None:
    """Give the stem `in_chans` input channels. Pretrained RGB filters are summed into one for a
    single (value) channel, as timm's `adapt_input_conv` does, so they still respond to the
    same patterns of brightness."""
    if in_chans == 3:
        return
    old = model.conv1
    new = nn.Conv2d(in_chans, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    if in_chans == 1:
        with torch.no_grad():
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    model.conv1 = new


@register_model
def resnet18(
    *,
    num_classes: int = 88,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    in_chans: int = 3,
    pretrained: bool = False,
) -> ResNet:
    """torchvision ResNet-18 (11M params); -s model.pretrained=true downloads ImageNet weights."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as _tv_resnet18

    if not pretrained:
        model = _tv_resnet18(weights=None, num_classes=num_classes)
        _adapt_first_conv(model, in_chans)
        return model
    try:
        model = _tv_resnet18(weights=ResNet18_Weights.DEFAULT)
    except Exception as e:  # a download failure is the user's network, not a bug in mnr
        raise MnrError(
            f"cannot fetch ImageNet weights for resnet18 ({type(e).__name__}: {e}); "
            "pretrained weights need network access once (then they are cached under "
            "$TORCH_HOME), or train without model.pretrained=true"
        ) from e
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    _adapt_first_conv(model, in_chans)
    mean, std = (
        (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.449,), (0.226,))
    )  # gray: the mean
    model.input_config = InputConfig(
        input_size=tuple(input_size), in_chans=in_chans, mean=mean, std=std, num_classes=num_classes
    )
    return model
