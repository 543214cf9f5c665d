"""The engines: each applies an algorithm's one per-task objective to a meta-batch, its own way.

An algorithm states its training maths once, for one task (:meth:`MetaAlgorithm.task_objective` and
:meth:`MetaAlgorithm.gradient_rule`); an engine decides how to run it and returns the mean meta-gradient:

- ``looped`` (:mod:`.looped`): one task after another, ``torch.autograd``; the reference.
- ``batched`` (:mod:`.batched`, ``batch_tasks: true``): the whole meta-batch in one grouped network.
- ``vmap`` (:mod:`.vmap`, ``vmap: true``): one task's ``torch.func.grad`` mapped over the tasks.
- compiled (:mod:`.compiled`, ``compile: true``): any of the three as one ``torch.compile`` graph.
- data-parallel (:mod:`.parallel`, ``--procs``): the meta-batch split over processes, all-reduced.
- chains (:mod:`.chains`, ``inner_chains`` > 1): Reptile's carried inner states as independent chains.

Importing this package installs :func:`engine_for` as the way an algorithm's ``meta_train_step`` picks
its engine from the config.
"""

from __future__ import annotations

import functools

from metacompare.engines import distributed
from metacompare.algorithms.base import Engine, install_engines
from metacompare.engines import batched, chains, compiled, looped, parallel, vmap
from metacompare.config.runconfig import RunConfig

ENGINES: dict[str, Engine] = {"looped": looped.looped_gradient, "batched": batched.batched_gradient,
                              "vmap": vmap.vmap_gradient}
COMPILED: dict[str, Engine] = {"looped": compiled.looped_gradient, "batched": compiled.batched_gradient,
                               "vmap": compiled.vmap_gradient}


def kind_of(cfg: RunConfig) -> str:
    """The engine a config names: ``vmap: true``, ``batch_tasks: true``, or neither (looped)."""
    return "vmap" if cfg.vmap else "batched" if cfg.batch_tasks else "looped"


def engine_for(cfg: RunConfig) -> Engine:
    """The engine a config asks for, compiled under ``compile: true``, split over the processes of a
    distributed run, or Reptile's chains under ``inner_chains`` > 1 (which split themselves)."""
    if cfg.inner_chains > 1:
        return functools.partial(chains.chained_gradient, batched=cfg.batch_tasks)
    if distributed.world_size() > 1:
        return functools.partial(parallel.split_gradient, kind=kind_of(cfg), compile=cfg.compile)
    return (COMPILED if cfg.compile else ENGINES)[kind_of(cfg)]


install_engines(engine_for)
