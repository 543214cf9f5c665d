"""ResNet-12, the backbone of MetaOptNet (Lee, Maji, Ravichandran & Soatto 2019, CVPR) and LibFewShot.

Four residual blocks; each is three 3x3 convolutions with BatchNorm and LeakyReLU(0.1) (none after the
third BatchNorm), a 1x1 convolution + BatchNorm shortcut added before the last LeakyReLU, then 2x2
max-pooling: 84 -> 42 -> 21 -> 10 -> 5 (mini-ImageNet), 28 -> 14 -> 7 -> 3 -> 1 (Omniglot). Widths
64-160-320-640 (MetaOptNet) or 64-128-256-512 (the narrower variant of TADAM, Oreshkin et al. 2018).
The last map is averaged over its positions (global average pooling) into a linear head, so the head
is ``widths[-1]`` wide at any image size (MetaOptNet flattens the 5x5 map instead).

BatchNorm keeps no running statistics, as in :func:`metacompare.models.conv4`: each forward pass
normalises with the statistics of its own batch (transductive), so nothing carries from one task to
the next. The network is a plain ``nn.Sequential`` of blocks ending in a ``Linear`` layer, so ANIL and
the pre-training baseline find its head, ``torch.func.functional_call`` runs it for every algorithm,
and :mod:`metacompare.models.grouped` runs it for a whole meta-batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (64, 160, 320, 640)  # MetaOptNet (Lee et al. 2019)
SLOPE = 0.1  # LeakyReLU's negative slope


def drop_block(x: torch.Tensor, rate: float, size: int, groups: int = 1) -> torch.Tensor:
    """DropBlock (Ghiasi, Lin & Le 2018, Algorithm 1): zero ``size`` x ``size`` squares of each channel.

    Block corners are drawn with probability γ = rate / size² · HW / ((H − size + 1)(W − size + 1)) at
    the positions where a whole block fits, so that about ``rate`` of the units are dropped; the kept
    ones are scaled by (units / kept units), counted per group of channels: ``groups`` tasks stacked
    along the channels (:mod:`metacompare.models.grouped`) are each rescaled as their own batch would be.
    Draws from torch's global generator.
    """
    n, c, h, w = x.shape
    size = min(size, h, w)
    gamma = rate / size ** 2 * (h * w) / ((h - size + 1) * (w - size + 1))
    corners = torch.bernoulli(torch.full((n, c, h - size + 1, w - size + 1), gamma, dtype=x.dtype, device=x.device))
    blocked = F.max_pool2d(F.pad(corners, (size - 1,) * 4), size, stride=1)  # 1 where a block covers
    keep = 1.0 - blocked
    per_group = keep.reshape(n, groups, c // groups, h, w)
    kept = per_group.sum(dim=(0, 2, 3, 4), keepdim=True).clamp(min=1.0)
    scale = (n * (c // groups) * h * w / kept).expand_as(per_group).reshape(n, c, h, w)
    return x * (keep * scale)


class DropBlock(nn.Module):
    """:func:`drop_block` while the module is in training mode (meta-training), the identity otherwise."""

    def __init__(self, rate: float, size: int):
        super().__init__()
        self.rate, self.size = rate, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_block(x, self.rate, self.size) if self.training and self.rate > 0 else x


class ResidualBlock(nn.Module):
    """One ResNet-12 block: (conv3x3-BN-LeakyReLU) x 2, conv3x3-BN, plus the 1x1 conv-BN shortcut,
    LeakyReLU, 2x2 max-pool, optionally DropBlock. Convolutions have no bias (BatchNorm follows)."""

    def __init__(self, cin: int, cout: int, drop: DropBlock | None = None):
        super().__init__()
        def norm():
            return nn.BatchNorm2d(cout, track_running_stats=False)
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(), nn.LeakyReLU(SLOPE),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(), nn.LeakyReLU(SLOPE),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm())
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm())
        self.out = nn.Sequential(nn.LeakyReLU(SLOPE), nn.MaxPool2d(2), *([drop] if drop is not None else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class GlobalMeanPool(nn.Module):
    """The mean over the spatial axes, flattened to ``[N, C]``: the features the head reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def resnet12(ways: int, channels: int = 3, widths: tuple[int, ...] = WIDTHS, dropblock_rate: float = 0.0,
             dropblock_size: int = 5) -> nn.Sequential:
    """ResNet-12 (Lee et al. 2019, MetaOptNet): 4 residual blocks of three 3x3 convs, BatchNorm, LeakyReLU(0.1).

    ``widths``: the four blocks' channels, 64-160-320-640 or 64-128-256-512. ``dropblock_rate`` > 0
    puts DropBlock (``dropblock_size`` squares) after the last two blocks, as MetaOptNet does; it acts
    in meta-training only (the model is in training mode only inside ``meta_train_step``). Conv weights
    Kaiming-normal (fan-out, leaky ReLU), BatchNorm scale 1 and offset 0.
    """
    blocks = []
    for i, width in enumerate(widths):
        drop = DropBlock(dropblock_rate, dropblock_size) if dropblock_rate > 0 and i >= len(widths) - 2 else None
        blocks.append(ResidualBlock(channels if i == 0 else widths[i - 1], width, drop))
    model = nn.Sequential(*blocks, GlobalMeanPool(), nn.Linear(widths[-1], ways))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu", a=SLOPE)
    return model.eval()  # DropBlock off outside meta-training (see MetaAlgorithm.meta_train_step)
