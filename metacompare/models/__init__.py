"""The networks of the papers: an MLP for sine regression, the 4-block conv nets and ResNet-12 for images.

``conv4`` / ``conv4_strided`` use torch's default initialisation; ``conv4_finn`` and ``conv4_nichol``
reproduce the Omniglot networks of the authors' code exactly as they are built there (see each).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from metacompare.data.source import IMAGE_NETWORKS, source_of
from metacompare.errors import ConfigError
from metacompare.models.resnet12 import resnet12
from metacompare.config.runconfig import RunConfig

__all__ = ["BatchNormOffset", "SpatialMean", "build_model", "check_input", "conv4", "conv4_finn", "conv4_nichol",
           "input_shape", "metamodel", "mlp", "offset_batch_norm", "refusal", "resnet12"]


IMAGE_MODELS = IMAGE_NETWORKS  # the networks that take images (a source's default networks)
MAX_SIZE = 512  # the largest image_size a config may set


def mlp(hidden: tuple[int, ...] = (40, 40), inputs: int = 1, outputs: int = 1) -> nn.Sequential:
    """Finn et al. (2017) sinusoid model: two hidden layers of 40 ReLU units."""
    layers: list[nn.Module] = []
    width = inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def metamodel(ways: int = 10, inputs: int = 28 * 28) -> nn.Sequential:
    """The tutorial article's ``MetaModel`` (its section 5.2.1): flatten, 784-64-64-``ways``, ReLU."""
    return nn.Sequential(nn.Flatten(), *mlp((64, 64), inputs=inputs, outputs=ways))


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


class BatchNormOffset(nn.Module):
    """BatchNorm with batch statistics and a learned offset but no scale: ``tf.contrib.layers.batch_norm``'s
    defaults (``center=True, scale=False``), as cbfinn/maml uses it. The offset is not in that code's
    ``weights`` dict, so the inner loop leaves it alone (``inner_loop_frozen``); the outer loop learns it."""

    inner_loop_frozen = True

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return offset_batch_norm(x, self.bias, self.eps)


def offset_batch_norm(x: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Batch-statistics BatchNorm with an offset and a constant unit scale. The scale is passed as ones
    rather than ``None`` (the same numbers: x̂·1 + b): on CUDA (torch 2.11, cuDNN) a ``None`` scale
    with an offset made ``autograd.grad`` fail with "tensor does not have a device"."""
    scale = torch.ones_like(bias)
    return F.batch_norm(x, None, None, scale, bias, True, 0.0, eps)


class SpatialMean(nn.Module):
    """Mean over the spatial axes: cbfinn/maml's ``reduce_mean(hidden4, [1, 2])`` before the Omniglot head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def conv4_finn(ways: int, channels: int = 1, filters: int = 64, image_size: int = 28,
               max_pool: bool = False) -> nn.Sequential:
    """Finn et al. (2017)'s networks as cbfinn/maml builds them: four 3x3 convs (Xavier uniform weights,
    zero biases), BatchNorm with an offset and no scale, ReLU. Omniglot: stride-2 convs, the mean over
    the remaining 2x2 positions, a head whose weights are drawn from N(0, 1) (``tf.random_normal``).
    mini-ImageNet (``max_pool``): stride-1 convs each followed by 2x2 max-pooling without padding
    (84 -> 42 -> 21 -> 10 -> 5), flattened into a Xavier-initialised head."""
    layers: list[nn.Module] = []
    for i in range(4):
        conv = nn.Conv2d(channels if i == 0 else filters, filters, 3, stride=1 if max_pool else 2, padding=1)
        nn.init.xavier_uniform_(conv.weight)
        nn.init.zeros_(conv.bias)
        layers += [conv, BatchNormOffset(filters), nn.ReLU()] + ([nn.MaxPool2d(2)] if max_pool else [])
    if max_pool:
        side = image_size
        for _ in range(4):
            side //= 2
        head = nn.Linear(filters * side * side, ways)
        nn.init.xavier_uniform_(head.weight)
        nn.init.zeros_(head.bias)
        return nn.Sequential(*layers, nn.Flatten(), head)
    head = nn.Linear(filters, ways)
    nn.init.normal_(head.weight, 0.0, 1.0)
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, SpatialMean(), head)


def conv4_nichol(ways: int, channels: int = 1, filters: int = 64, image_size: int = 28,
                 max_pool: bool = False) -> nn.Sequential:
    """Nichol et al. (2018)'s networks as supervised-reptile builds them: four 3x3 convs, BatchNorm
    (scale and offset, batch statistics), ReLU, flatten, dense; TensorFlow's default Glorot uniform
    weights and zero biases. Omniglot: stride-2 convs. mini-ImageNet (``max_pool``): stride-1 convs
    and 'same'-padded 2x2 max-pooling (84 -> 42 -> 21 -> 11 -> 6: ``ceil_mode``). (TensorFlow pads
    'same' convolutions asymmetrically; here by one pixel on every side: the same output sizes.)"""
    layers: list[nn.Module] = []
    for i in range(4):
        conv = nn.Conv2d(channels if i == 0 else filters, filters, 3, stride=1 if max_pool else 2, padding=1)
        norm = nn.BatchNorm2d(filters, eps=1e-3, track_running_stats=False)  # tf.layers' default epsilon
        layers += [conv, norm, nn.ReLU()] + ([nn.MaxPool2d(2, ceil_mode=True)] if max_pool else [])
    body = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        features = body(torch.zeros(2, channels, image_size, image_size)).shape[1]
    model = nn.Sequential(*body, nn.Linear(features, ways))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model


class BagOfEmbeddings(nn.Module):
    """The mean of a text's token embeddings, padding (id 0) left out: fastText's sentence vector
    (Joulin et al. 2017). Plain tensor operations, so the inner loops adapt the embeddings too."""

    def __init__(self, buckets: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(buckets, dim) / dim ** 0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        vectors = F.embedding(tokens, self.weight)
        mask = (tokens != 0).unsqueeze(-1).to(vectors.dtype)
        return (vectors * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def bag_of_embeddings(ways: int, buckets: int = 8192, dim: int = 32) -> nn.Sequential:
    """Token ids -> mean embedding -> one hidden ReLU layer -> ``ways`` logits (``dataset: text``)."""
    return nn.Sequential(BagOfEmbeddings(buckets, dim), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, ways))


def input_shape(cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
    """What one example of ``cfg``'s data is (its source's
    :meth:`~metacompare.data.source.DataSource.input_shape`): ``(channels, size, size)`` for images,
    ``(width,)`` or ``(max_tokens,)`` otherwise. A user's folder with ``user_data.channels: 0`` has its
    channels detected from a few images' headers, unless ``channels`` says which to assume."""
    return tuple(source_of(cfg).input_shape(cfg, channels))


def _network(cfg: RunConfig, shape: tuple[int, ...]) -> nn.Module:
    """The network ``cfg.model`` names, sized for examples of ``shape``. Colour images take the
    max-pooling variants of Finn's and Nichol's networks (their mini-ImageNet networks)."""
    if cfg.model == "mlp":
        return mlp()
    if cfg.model == "bag_of_embeddings":
        return bag_of_embeddings(cfg.ways, cfg.user_data.vocab_buckets, cfg.user_data.embedding_dim)
    if cfg.model == "metamodel":
        return metamodel(cfg.ways, math.prod(shape))
    channels, size = shape[0], shape[-1]
    colour = channels == 3
    if cfg.model == "resnet12":
        r = cfg.resnet12
        return resnet12(cfg.ways, channels, r.widths, r.dropblock_rate, r.dropblock_size)
    if cfg.model == "conv4_finn":
        return conv4_finn(cfg.ways, channels, cfg.filters, size, max_pool=colour)
    if cfg.model == "conv4_nichol":
        return conv4_nichol(cfg.ways, channels, cfg.filters, size, max_pool=colour)
    return conv4(cfg.ways, channels, cfg.filters, size, strided=cfg.model == "conv4_strided")


@functools.lru_cache(maxsize=1024)
def _takes(model: str, shape: tuple[int, ...]) -> bool:
    """Whether ``model`` runs on a batch of ``shape`` examples: built one filter wide (the width does
    not change what the pooling leaves) and run on the meta device, where only shapes are computed."""
    base = RunConfig()
    probe = replace(base, model=model, ways=2, filters=1, resnet12=replace(base.resnet12, widths=(1, 1, 1, 1)))
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Initializing zero-element tensors is a no-op"
            _network(probe, shape)(torch.zeros(2, *shape))
    except (RuntimeError, ValueError):
        return False
    return True


def refusal(cfg: RunConfig, shape: tuple[int, ...]) -> str | None:
    """Why ``cfg``'s network cannot take images of ``shape`` (which field, the smallest size it takes,
    the networks that take this one), or None when it can: the one rule every dataset is checked by,
    computed from the network itself rather than a size written down per model."""
    if len(shape) != 3 or _takes(cfg.model, shape):
        return None
    channels, size = shape[0], shape[-1]
    smallest = next((s for s in range(size + 1, MAX_SIZE + 1) if _takes(cfg.model, (channels, s, s))), None)
    others = [m for m in IMAGE_MODELS if m != cfg.model and _takes(m, shape)]
    field = source_of(cfg).size_field
    need = f"at least {smallest} pixels per side" if smallest else "larger images"
    fix = (f"raise {field} to {smallest} or more, or " if smallest and field != "model" else "") + \
        (f"set model: {' or '.join(others)}" if others else "choose another model")
    return (f"{field}: {cfg.model} needs {need} (its pooling shrinks a {size}-pixel image to nothing), "
            f"got {size}x{size} {cfg.dataset} images; {fix}")


def check_input(cfg: RunConfig, shape: tuple[int, ...]) -> None:
    reason = refusal(cfg, shape)
    if reason:
        raise ConfigError(reason)


def build_model(cfg: RunConfig) -> nn.Module:
    """The model named by ``cfg.model`` for ``cfg``'s data (:func:`input_shape`), initialised from
    ``cfg.seed``; a network that cannot take the data's images is a ConfigError, not a crash later."""
    shape = input_shape(cfg)
    check_input(cfg, shape)
    torch.manual_seed(cfg.seed)
    return _network(cfg, shape)
