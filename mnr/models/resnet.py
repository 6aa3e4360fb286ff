"""ResNet from torchvision, registered under mnr's names and conventions.

torchvision's ResNet ends in adaptive average pooling, so it accepts any input size of at least
32 x 32; `input_size` is only recorded in the model's `InputConfig`. Weights are random unless
`pretrained=True`, which downloads torchvision's ImageNet weights (about 45 MB, so it needs
network access the first time; torch caches them under $TORCH_HOME) and normalises inputs with
ImageNet's statistics, which those weights were trained with.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet, ResNet18_Weights
from torchvision.models import resnet18 as _tv_resnet18

from mnr.config import DEFAULT_INPUT_SIZE
from mnr.errors import MnrError
from mnr.models.registry import InputConfig, register_model

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's pretrained weights expect
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_model
def resnet18(
    *,
    num_classes: int = 88,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    pretrained: bool = False,
) -> ResNet:
    """torchvision ResNet-18 (11M params); -s model.pretrained=true downloads ImageNet weights."""
    if not pretrained:
        return _tv_resnet18(weights=None, num_classes=num_classes)
    try:
        model = _tv_resnet18(weights=ResNet18_Weights.DEFAULT)
    except Exception as e:  # a download failure is the user's network, not a bug in mnr
        raise MnrError(
            f"cannot fetch ImageNet weights for resnet18 ({type(e).__name__}: {e}); "
            "pretrained weights need network access once (then they are cached under "
            "$TORCH_HOME), or train without model.pretrained=true"
        ) from e
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    model.input_config = InputConfig(
        input_size=tuple(input_size), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=num_classes
    )
    return model
