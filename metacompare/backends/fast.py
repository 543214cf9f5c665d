"""Fast paths for meta-training, chosen by config: task batching, bfloat16 autocast, memory layout.

``batch_tasks: true`` runs a whole meta-batch as *one* network: every task gets its own copy of the
parameters, stacked along a leading task axis, and the conv layers become one grouped convolution
with the tasks as groups (``[N, T·C, H, W]`` activations, ``groups=T``); the linear head is one
batched matmul. BatchNorm over ``T·C`` channels normalises each task with its own batch statistics,
so the result is the per-task loop's, computed in a few large kernels instead of ``T`` small ones.
The inner loss is the *sum* of the tasks' mean losses, so its gradient with respect to task ``t``'s
copy is exactly that task's own gradient; SGD and Adam are elementwise, so one optimiser over the
stacked copies is ``T`` independent optimisers.

``precision: bfloat16`` runs meta-training under CPU/CUDA autocast (float32 master weights);
``memory_format: channels_last`` stores conv weights and images NHWC.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from metacompare.data import Task
from metacompare.errors import UserError

Params = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------ precision and layout
def autocast(cfg) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when the config asks for it, otherwise nothing."""
    if getattr(cfg, "precision", "float32") != "bfloat16":
        return contextlib.nullcontext()
    # No cast cache: it keys on the weight tensor, so a weight updated in place inside the region
    # (Reptile's inner optimiser) would keep being read as its stale bfloat16 copy.
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, cache_enabled=False)


def prepare_model(model: nn.Module, cfg) -> nn.Module:
    """Apply the configured memory layout to the model's 4-d weights (in place)."""
    if getattr(cfg, "memory_format", "contiguous") == "channels_last":
        model.to(memory_format=torch.channels_last)
    return model


def prepare_task(task: Task, cfg) -> Task:
    """Apply the configured memory layout to a task's images."""
    if getattr(cfg, "memory_format", "contiguous") != "channels_last" or task.support_x.dim() != 4:
        return task
    def nhwc(x):
        return x.contiguous(memory_format=torch.channels_last)
    return Task(nhwc(task.support_x), task.support_y, nhwc(task.query_x), task.query_y, task.classes)


# ---------------------------------------------------------------------------- the grouped network
def _layers(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Leaf modules in call order with their parameter-name prefixes (nested Sequentials only)."""
    children = list(module.named_children())
    if not children:
        yield prefix, module
        return
    if not isinstance(module, nn.Sequential):
        raise UserError(f"batch_tasks: cannot batch tasks through {type(module).__name__}; "
                        f"set batch_tasks: false")
    for name, child in children:
        yield from _layers(child, f"{prefix}{name}.")


def grouped_forward(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """``model`` applied to every task at once: ``x`` is ``[T, N, ...]``, each param ``[T, ...]``.

    Returns ``[T, N, outputs]``; task ``t`` sees only its own inputs and its own parameters.
    """
    tasks, n = x.shape[:2]
    grouped = x.dim() == 5
    h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:]) if grouped else x
    for prefix, layer in _layers(model):
        def p(name):
            return params[prefix + name]
        if isinstance(layer, nn.Conv2d):
            w = p("weight")
            bias = p("bias").reshape(-1) if layer.bias is not None else None
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), bias, layer.stride, layer.padding,
                         layer.dilation, tasks * layer.groups)
        elif isinstance(layer, nn.BatchNorm2d):
            if layer.track_running_stats:
                raise UserError("batch_tasks: BatchNorm with running statistics cannot be batched over tasks; "
                                "set batch_tasks: false")
            weight = p("weight").reshape(-1) if layer.affine else None
            bias = p("bias").reshape(-1) if layer.affine else None
            h = F.batch_norm(h, None, None, weight, bias, True, 0.0, layer.eps)
        elif isinstance(layer, nn.MaxPool2d):
            h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
        elif isinstance(layer, nn.ReLU):
            h = F.relu(h)
        elif isinstance(layer, nn.Flatten):
            h = h.reshape(n, tasks, -1).transpose(0, 1)  # [T, N, C·H·W], per task in C, H, W order
            grouped = False
        elif isinstance(layer, nn.Linear):
            w = p("weight")
            h = torch.baddbmm(p("bias").unsqueeze(1), h, w.transpose(1, 2)) if layer.bias is not None \
                else torch.bmm(h, w.transpose(1, 2))
        else:
            raise UserError(f"batch_tasks: no grouped version of {type(layer).__name__}; set batch_tasks: false")
    if grouped:
        raise UserError("batch_tasks: the model must end in a Linear layer to be batched over tasks")
    return h


def task_losses(loss_fn: Callable, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each task's mean loss, shape ``[T]``, for cross-entropy or MSE ``loss_fn``."""
    flat = loss_fn(outputs.flatten(0, 1), targets.flatten(0, 1), reduction="none")
    return flat.reshape(outputs.shape[0], -1).mean(1)


def task_accuracies(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    if targets.is_floating_point():
        return None
    return (outputs.argmax(-1) == targets).float().mean(1)


def stacked(model: nn.Module, tasks: int, track: bool) -> Params:
    """Every parameter repeated per task; differentiable back to θ when ``track``, else fresh leaves."""
    if track:
        return {k: v.unsqueeze(0).expand(tasks, *v.shape) for k, v in model.named_parameters()}
    return {k: v.detach().unsqueeze(0).repeat(tasks, *[1] * v.dim()).requires_grad_()
            for k, v in model.named_parameters()}


def sgd_steps(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
              lr: float, steps: int, second_order: bool) -> Params:
    """``steps`` SGD steps of every task at once; see :func:`metacompare.backends.functional.sgd_steps`."""
    for _ in range(steps):
        loss = task_losses(loss_fn, grouped_forward(model, params, x), y).sum()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order)
        params = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    return params


# ---------------------------------------------------------------------------- meta-gradients
@dataclass
class BatchGradient:
    """The mean meta-gradient of a meta-batch, and the mean loss/accuracy seen computing it."""

    grads: list[torch.Tensor]
    loss: float
    accuracy: float | None


def same_shapes(tasks: list[Task]) -> bool:
    first = tasks[0]
    return all(t.support_x.shape == first.support_x.shape and t.query_x.shape == first.query_x.shape
               for t in tasks)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.contiguous() for t in tensors])


def _summary(losses: torch.Tensor, outputs: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
    acc = task_accuracies(outputs, y)
    return losses.mean().item(), (acc.mean().item() if acc is not None else None)


def maml_gradient(model: nn.Module, tasks: list[Task], loss_fn: Callable, lr: float, steps: int,
                  second_order: bool) -> BatchGradient:
    """Mean (FO)MAML meta-gradient of ``tasks``, all adapted in one grouped network."""
    sx, sy = _stack([t.support_x for t in tasks]), _stack([t.support_y for t in tasks])
    qx, qy = _stack([t.query_x for t in tasks]), _stack([t.query_y for t in tasks])
    start = stacked(model, len(tasks), track=second_order)
    adapted = sgd_steps(model, start, sx, sy, loss_fn, lr, steps, second_order)
    if not second_order:  # FOMAML: the query gradient at θ̃, with dθ̃/dθ taken as the identity
        adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    outputs = grouped_forward(model, adapted, qx)
    losses = task_losses(loss_fn, outputs, qy)
    wrt = list(model.parameters()) if second_order else list(adapted.values())
    grads = torch.autograd.grad(losses.mean(), wrt)
    if not second_order:
        grads = [g.sum(0) for g in grads]  # Σ_t ∂(mean_t L_t)/∂θ̃_t = mean_t ∇L_t(θ̃_t)
    return BatchGradient(list(grads), *_summary(losses.detach(), outputs.detach(), qy))


def reptile_gradient(model: nn.Module, tasks: list[Task], loss_fn: Callable, lr: float, steps: int,
                     optimizer: str) -> BatchGradient:
    """Mean Reptile direction θ − θ̃ over ``tasks``, each trained on all its data, in one grouped network."""
    from metacompare.algorithms.base import make_optimizer

    x, y = _stack([t.all_x for t in tasks]), _stack([t.all_y for t in tasks])
    params = stacked(model, len(tasks), track=False)
    inner = make_optimizer(optimizer, list(params.values()), lr)
    for _ in range(steps):
        inner.zero_grad(set_to_none=True)
        task_losses(loss_fn, grouped_forward(model, params, x), y).sum().backward()
        inner.step()
    with torch.no_grad():
        outputs = grouped_forward(model, params, x)
        losses = task_losses(loss_fn, outputs, y)
        grads = [theta - tilde.mean(0) for theta, tilde in zip(model.parameters(), params.values())]
    return BatchGradient(grads, *_summary(losses, outputs, y))


def batched_meta_gradient(algorithm, tasks: list[Task]) -> BatchGradient | None:
    """The algorithm's mean meta-gradient via task batching, or None when it has no batched form.

    Tasks are processed ``task_chunk`` at a time (0: all at once); smaller chunks bound the memory of
    second-order MAML, whose graph holds every task's activations.
    """
    from metacompare.algorithms.base import MetaAlgorithm

    cfg = algorithm.cfg
    if algorithm.name not in ("maml", "fomaml", "reptile") or not same_shapes(tasks):
        return None
    if algorithm.name == "reptile" and cfg.backend == "learn2learn":
        return None
    if type(algorithm).meta_parameters is not MetaAlgorithm.meta_parameters:
        return None  # plug-ins with extra meta-parameters (Meta-SGD-like) need their own path
    chunk = getattr(cfg, "task_chunk", 0) or len(tasks)
    parts = []
    for start in range(0, len(tasks), chunk):
        part = tasks[start:start + chunk]
        if algorithm.name == "reptile":
            result = reptile_gradient(algorithm.model, part, algorithm.loss_fn, cfg.inner_lr, cfg.inner_steps,
                                      cfg.inner_optimizer)
        else:
            result = maml_gradient(algorithm.model, part, algorithm.loss_fn, cfg.inner_lr, cfg.inner_steps,
                                   second_order=algorithm.name == "maml")
        parts.append((len(part), result))
    total = len(tasks)
    grads = [sum(n * r.grads[i] for n, r in parts) / total for i in range(len(parts[0][1].grads))]
    loss = sum(n * r.loss for n, r in parts) / total
    acc = None if parts[0][1].accuracy is None else sum(n * r.accuracy for n, r in parts) / total
    return BatchGradient(grads, loss, acc)
