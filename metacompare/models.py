"""The networks of the papers: an MLP for sine regression and the 4-block conv net for Omniglot."""

from __future__ import annotations

import torch
from torch import nn

from metacompare.config import RunConfig


def mlp(hidden: tuple[int, ...] = (40, 40), inputs: int = 1, outputs: int = 1) -> nn.Sequential:
    """Finn et al. (2017) sinusoid model: two hidden layers of 40 ReLU units."""
    layers: list[nn.Module] = []
    width = inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def _block(cin: int, cout: int, strided: bool) -> nn.Sequential:
    # BatchNorm keeps no running statistics: they would leak between tasks, and both papers'
    # code normalise with the statistics of the batch at hand (transductive evaluation).
    norm = nn.BatchNorm2d(cout, track_running_stats=False)
    if strided:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), norm, nn.ReLU())
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), norm, nn.ReLU(), nn.MaxPool2d(2))


def conv4(ways: int, channels: int = 1, filters: int = 64, image_size: int = 28, strided: bool = False) -> nn.Sequential:
    """Four 3x3 conv blocks with BatchNorm and ReLU, then a linear head.

    ``strided=False``: 2x2 max-pooling per block (Vinyals et al. 2016, Finn et al. 2017 for
    mini-ImageNet). ``strided=True``: stride-2 convolutions and no pooling, which both the MAML and
    Reptile code use for Omniglot; it costs about 3.7x fewer FLOPs at 28x28.
    """
    body = nn.Sequential(*[_block(channels if i == 0 else filters, filters, strided) for i in range(4)],
                         nn.Flatten())
    with torch.no_grad():
        features = body(torch.zeros(2, channels, image_size, image_size)).shape[1]
    return nn.Sequential(*body, nn.Linear(features, ways))


def build_model(cfg: RunConfig) -> nn.Module:
    """The model named by ``cfg.model``, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    if cfg.model == "mlp":
        return mlp()
    if cfg.dataset == "miniimagenet":  # 84x84 colour images (Vinyals et al. 2016)
        return conv4(cfg.ways, channels=3, filters=cfg.filters, image_size=84, strided=cfg.model == "conv4_strided")
    return conv4(cfg.ways, filters=cfg.filters, image_size=cfg.omniglot.image_size,
                 strided=cfg.model == "conv4_strided")
