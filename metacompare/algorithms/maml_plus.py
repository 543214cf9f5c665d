"""MAML++'s training options (Antoniou, Edwards & Storkey 2019, "How to train your MAML", ICLR, section 4):
the schedules and the per-step tensors that :class:`~metacompare.algorithms.maml.MAML` uses when
``mamlpp`` turns them on (``maml++`` turns them all on, :data:`PRESET`).

Every option goes through the one inner loop (:func:`metacompare.algorithms.inner.adapt`): learned step sizes are
its :class:`~metacompare.algorithms.inner.PerStepSGD` optimiser, per-step BatchNorm tensors its ``at_step`` hook,
the multi-step loss its ``trace``. The paper's schedules count epochs (500 iterations each); here they
read the fraction of training done (``MetaAlgorithm.progress``), so they scale with any budget.
"""

from __future__ import annotations

import torch
from torch import nn

from metacompare.algorithms import inner
from metacompare.config.runconfig import MamlPlusPlusConfig, RunConfig

# The paper's values, checked against its code (AntreasAntoniou/HowToTrainYourMAMLPytorch, experiment_config/
# omniglot_maml++-omniglot_1_8_0.1_64_5_0.json): MSL over 10 of 100 epochs, per-step BN weights and biases,
# LSLR from 0.1; DA first order for the first 50 of 100 epochs (the paper's section 4; that file sets -1,
# second order throughout). BNRS is off: the code collects per-step running statistics but normalises
# every forward pass with the batch's (``F.batch_norm(..., training=True)``), so its published accuracies
# were measured with batch statistics; ``per_step_bn_statistics: true`` gives the paper's description.
PRESET = MamlPlusPlusConfig(multi_step_loss=True, msl_fraction=0.1, per_step_bn_weights=True,
                            per_step_bn_statistics=False, learned_inner_lr=True, first_order_fraction=0.5)
OFF = MamlPlusPlusConfig()
MSL_FLOOR = 0.03  # the paper's code: no step but the last falls below 0.03 / steps while MSL is on


def options_for(cfg: RunConfig, preset: MamlPlusPlusConfig = OFF) -> MamlPlusPlusConfig:
    """The options a run uses: its ``mamlpp`` section, or the algorithm's preset where it has none."""
    return cfg.mamlpp if cfg.mamlpp is not None else preset


def msl_weights(steps: int, progress: float, msl_fraction: float) -> list[float] | None:
    """The importance of each inner step's query loss, or None once MSL is over (the last step alone).

    At the start every step weighs 1/N; the first N − 1 lose (1/N)·p and the last gains (N − 1)/N·p, with
    p = progress / msl_fraction, floored at 0.03/N and capped at 1 − (N − 1)·0.03/N (the paper's code,
    ``get_per_step_loss_importance_vector``, p = epoch / multi_step_loss_num_epochs).
    """
    if progress >= msl_fraction:
        return None
    p, floor = progress / msl_fraction, MSL_FLOOR / steps
    weights = [max(1 / steps - p / steps, floor) for _ in range(steps - 1)]
    return weights + [min(1 / steps + (steps - 1) * p / steps, 1 - (steps - 1) * floor)]


def second_order_now(progress: float, options: MamlPlusPlusConfig) -> bool:
    """Derivative-order annealing: first order while ``progress`` < ``first_order_fraction``."""
    return progress >= options.first_order_fraction


def needs_graph(options: MamlPlusPlusConfig) -> bool:
    """Whether the options need MAML++'s own meta-gradient path (anything but DA alone)."""
    return (options.multi_step_loss or options.learned_inner_lr or options.per_step_bn_weights
            or options.per_step_bn_statistics)


class PerStep:
    """The tensors MAML++ keeps per inner step: learned step sizes (LSLR: one per parameter tensor per
    step, starting at ``inner_lr``) and each BatchNorm2d's weight and bias (BNWB, starting at the layer's)
    and running statistics (BNRS: mean 0, variance 1, momentum 0.1, as the paper's code). The weights and
    biases replace the layer's own, which no longer take part, and are learned in the outer loop only
    (the paper's ``enable_inner_loop_optimizable_bn_params: false``). Step k uses entry k; a test-time
    loop longer than training's keeps the last entry."""

    def __init__(self, model: nn.Module, cfg: RunConfig, options: MamlPlusPlusConfig, adapted: tuple[str, ...]):
        self.steps = cfg.inner_steps
        # a model without BatchNorm2d asked for per-step BatchNorm tensors is refused by validation
        norms = [(prefix, m) for prefix, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
        self.norm_params: dict[str, torch.Tensor] = {}
        if options.per_step_bn_weights:
            for prefix, m in norms:
                if m.affine:
                    for name in ("weight", "bias"):
                        start = getattr(m, name).detach()
                        self.norm_params[f"{prefix}.{name}"] = start.unsqueeze(0).repeat(self.steps, 1).requires_grad_()
        self.norm_stats: dict[str, torch.Tensor] = {}
        self.norm_modules: list[nn.BatchNorm2d] = []
        if options.per_step_bn_statistics:
            for prefix, m in norms:
                # The module's flag only: its own buffers stay None, so a forward without step tensors
                # still normalises with the batch's statistics and updates nothing.
                m.track_running_stats = True
                like = m.weight if m.affine else next(model.parameters())
                self.norm_stats[f"{prefix}.running_mean"] = torch.zeros(self.steps, m.num_features, dtype=like.dtype,
                                                                        device=like.device)
                self.norm_stats[f"{prefix}.running_var"] = torch.ones(self.steps, m.num_features, dtype=like.dtype,
                                                                      device=like.device)
                self.norm_modules.append(m)
        self.adapted = tuple(name for name in adapted if name not in self.norm_params)
        params = dict(model.named_parameters())
        self.rates: dict[str, torch.Tensor] = {}
        if options.learned_inner_lr:
            self.rates = {name: torch.full((self.steps,), cfg.inner_lr, dtype=params[name].dtype,
                                           device=params[name].device).requires_grad_() for name in self.adapted}
        self.replaced = set(self.norm_params)  # model parameters that no longer take part

    def named_meta_parameters(self) -> inner.Params:
        """The learned step sizes, then the per-step BatchNorm weights, by name."""
        return {**{f"lslr.{k}": r for k, r in self.rates.items()},
                **{f"bn_step.{k}": t for k, t in self.norm_params.items()}}

    def at_step(self, step: int, tasks: int = 0, statistics: bool = True) -> inner.Params:
        """The tensors that replace the layers' own in step ``step``'s forward pass; ``tasks``: repeated
        along a leading task axis for the grouped network (no statistics there: they do not batch)."""
        k = min(step, self.steps - 1)
        fixed = {name: t[k] for name, t in self.norm_params.items()}
        if tasks:
            return {name: t.unsqueeze(0).expand(tasks, *t.shape) for name, t in fixed.items()}
        if not statistics:
            return fixed
        return {**fixed, **{name: t[k] for name, t in self.norm_stats.items()}}

    def optimizer(self, detached: bool = False) -> inner.PerStepSGD:
        """LSLR's inner optimiser; ``detached`` (test time): the rates as constants."""
        return inner.PerStepSGD({k: r.detach() if detached else r for k, r in self.rates.items()})

    def using_statistics(self, use: bool):
        """A context in which the BatchNorm layers normalise with the step tensors' running statistics
        (``use``: evaluation) or with the batch's, updating them (training)."""
        return _NormMode(self.norm_modules, training=not use)

    def state_dict(self) -> dict:
        return {name: t.detach().clone() for name, t in {**self.rates, **self.norm_params, **self.norm_stats}.items()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for name, t in {**self.rates, **self.norm_params, **self.norm_stats}.items():
                t.copy_(state[name])


class _NormMode:
    """Sets BatchNorm layers' ``training`` flag for a block and restores it after."""

    def __init__(self, modules: list[nn.Module], training: bool):
        self.modules, self.training, self.saved = modules, training, []

    def __enter__(self) -> None:
        self.saved = [m.training for m in self.modules]
        for m in self.modules:
            m.training = self.training

    def __exit__(self, *exc) -> None:
        for m, mode in zip(self.modules, self.saved):
            m.training = mode
