"""One network for a whole meta-batch: the task-batched engine's forward pass.

Every task gets its own copy of the parameters, stacked along a leading task axis, and the conv
layers become one grouped convolution with the tasks as groups (``[N, T·C, H, W]`` activations,
``groups=T``); the linear head is one batched matmul. BatchNorm over ``T·C`` channels normalises each
task with its own batch statistics, so the result is the per-task loop's, computed in a few large
kernels instead of ``T`` small ones; a ResNet-12 block's two branches are run so and added. The inner
loop (:func:`metacompare.algorithms.inner.adapt` with ``stacked=True``) sums the tasks' losses, so each task's
copy gets exactly its own gradient.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from metacompare.data import Task
from metacompare.errors import UserError
from metacompare.models import offset_batch_norm
from metacompare.models.resnet12 import DropBlock, ResidualBlock, drop_block

Params = dict[str, torch.Tensor]


def _layers(module: nn.Module, prefix: str = "", off: str = "batch_tasks: false") -> Iterator[tuple[str, nn.Module]]:
    """Leaf modules in call order with their parameter-name prefixes (nested Sequentials only; a
    ResNet-12 block is yielded whole, its branches are walked by :func:`_through`)."""
    children = list(module.named_children())
    if not children or isinstance(module, ResidualBlock):
        yield prefix, module
        return
    if not isinstance(module, nn.Sequential):
        raise UserError(f"{off.split(':')[0]}: cannot batch tasks through {type(module).__name__}; set {off}")
    for name, child in children:
        yield from _layers(child, f"{prefix}{name}.", off)


def grouped_forward(model: nn.Module, params: Params, x: torch.Tensor, off: str = "batch_tasks: false") -> torch.Tensor:
    """``model`` applied to every task at once: ``x`` is ``[T, N, ...]``, each param ``[T, ...]``.

    Returns ``[T, N, outputs]``; task ``t`` sees only its own inputs and its own parameters. ``off``: the
    setting that turns the grouped network off, named in the error for a model it cannot group.
    """
    tasks, n = x.shape[:2]
    grouped = x.dim() == 5
    h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:]) if grouped else x
    h, grouped = _through(model, "", params, h, tasks, grouped, off)
    if grouped:
        raise UserError(f"{off.split(':')[0]}: the model must end in a Linear layer to be batched over tasks; set {off}")
    return h


def _through(module: nn.Module, prefix: str, params: Params, h: torch.Tensor, tasks: int,
             grouped: bool, off: str = "batch_tasks: false") -> tuple[torch.Tensor, bool]:
    """``h`` through ``module``'s layers; ``grouped``: ``h`` is ``[N, T·C, H, W]`` (else ``[T, N, F]``)."""
    for name, layer in _layers(module, prefix, off):
        if isinstance(layer, ResidualBlock):  # body(h) + shortcut(h), then LeakyReLU, pooling, DropBlock
            body, _ = _through(layer.body, f"{name}body.", params, h, tasks, grouped, off)
            shortcut, _ = _through(layer.shortcut, f"{name}shortcut.", params, h, tasks, grouped, off)
            h, grouped = _through(layer.out, f"{name}out.", params, body + shortcut, tasks, grouped, off)
        else:
            h, grouped = _leaf(layer, name, params, h, tasks, grouped, off)
    return h, grouped


def _leaf(layer: nn.Module, prefix: str, params: Params, h: torch.Tensor, tasks: int,
          grouped: bool, off: str = "batch_tasks: false") -> tuple[torch.Tensor, bool]:
    """One leaf layer on the stacked activations."""
    field = off.split(":")[0]
    n = h.shape[0] if grouped else h.shape[1]
    def p(name):
        return params[prefix + name]
    if isinstance(layer, nn.Conv2d):
        w = p("weight")
        bias = p("bias").reshape(-1) if layer.bias is not None else None
        h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), bias, layer.stride, layer.padding,
                     layer.dilation, tasks * layer.groups)
    elif isinstance(layer, nn.BatchNorm2d):
        if layer.track_running_stats:
            raise UserError(f"{field}: BatchNorm with running statistics cannot be batched over tasks; "
                            f"set {off}")
        weight = p("weight").reshape(-1) if layer.affine else None
        bias = p("bias").reshape(-1) if layer.affine else None
        h = F.batch_norm(h, None, None, weight, bias, True, 0.0, layer.eps)
    elif getattr(layer, "inner_loop_frozen", False):  # models.BatchNormOffset: offset, no scale
        h = offset_batch_norm(h, p("bias").reshape(-1), layer.eps)
    elif type(layer).__name__ in ("SpatialMean", "GlobalMeanPool"):
        h = h.mean(dim=(2, 3)).reshape(n, tasks, -1).transpose(0, 1)
        grouped = False
    elif isinstance(layer, nn.MaxPool2d):
        h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
    elif isinstance(layer, nn.ReLU):
        h = F.relu(h)
    elif isinstance(layer, nn.LeakyReLU):
        h = F.leaky_relu(h, layer.negative_slope)
    elif isinstance(layer, DropBlock):  # each task's channels rescaled as its own batch
        h = drop_block(h, layer.rate, layer.size, groups=tasks) if layer.training and layer.rate > 0 else h
    elif isinstance(layer, nn.Flatten):
        h = h.reshape(n, tasks, -1).transpose(0, 1)  # [T, N, C·H·W], per task in C, H, W order
        grouped = False
    elif isinstance(layer, nn.Linear):
        w = p("weight")
        h = torch.baddbmm(p("bias").unsqueeze(1), h, w.transpose(1, 2)) if layer.bias is not None \
            else torch.bmm(h, w.transpose(1, 2))
    else:
        raise UserError(f"{field}: no grouped version of {type(layer).__name__}; set {off}")
    return h, grouped


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.contiguous() for t in tensors])


def same_shapes(tasks: list[Task]) -> bool:
    first = tasks[0]
    return all(t.support_x.shape == first.support_x.shape and t.query_x.shape == first.query_x.shape
               for t in tasks)


def stacked(params: Params, tasks: int, track: bool) -> Params:
    """Every parameter repeated per task; differentiable back to θ when ``track``, else fresh leaves."""
    if track:
        return {k: v.unsqueeze(0).expand(tasks, *v.shape) for k, v in params.items()}
    return {k: v.detach().unsqueeze(0).repeat(tasks, *[1] * v.dim()).requires_grad_() for k, v in params.items()}
