"""Does the ``_foreach`` Adam step pay? Reptile's training inner loop as supervised-reptile runs it on
Omniglot (configs/omniglot_minimal.yaml: Nichol et al.'s network, 5 Adam steps on mini-batches of 10
out of 50 images, Adam's state carried), timed with :class:`metacompare.algorithms.inner.Adam` on its ``_foreach``
kernels against the same step written per tensor (the path that keeps a graph for second order), and
with the network and images in channels_last as well. Both from the same θ and images, interleaved
after warm-ups, in this process's CPU time, so load from other processes hits them alike. One thread.
Equality of the two Adam steps is ``tests/test_fast_paths.py``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/adam_probe.py
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import torch
from torch.func import functional_call

from metacompare.algorithms import inner
from metacompare.models import conv4_nichol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--tasks", type=int, default=20, help="tasks (5 steps each) per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = conv4_nichol(5)
    x, y = torch.randn(50, 1, 28, 28), torch.randint(0, 5, (50,))
    loop = inner.InnerLoop(inner.Adam(0.001, (0.0, 0.999)), steps=5, batch_size=10, reduction="sum")

    def contender(per_tensor: bool, channels_last: bool):
        net = conv4_nichol(5)
        net.load_state_dict(model.state_dict())
        images = x
        if channels_last:
            net, images = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        theta = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}

        def forward(params, inputs):
            return functional_call(net, params, (inputs,))

        def run() -> None:
            state = None
            with mock.patch.object(inner, "_plain", lambda tensors: False) if per_tensor else contextlib.nullcontext():
                for _ in range(args.tasks):
                    _, state = inner.adapt(forward, theta, images, y, loop, state)
        return run

    contenders = {"per-tensor Adam": contender(True, False), "foreach Adam": contender(False, False),
                  "foreach Adam + channels_last": contender(False, True)}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for run in contenders.values():
        run()  # warm-up
    for _ in range(args.rounds):
        for name, run in contenders.items():
            started = time.process_time()
            run()
            times[name].append((time.process_time() - started) / (args.tasks * loop.steps))
    reference = statistics.median(times["per-tensor Adam"])
    print(f"{'inner step (5-way, 10 images, conv4_nichol)':<34}{'median ms':>10}{'min ms':>8}{'speed-up':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<34}{1e3 * median:>10.2f}{1e3 * min(values):>8.2f}{reference / median:>9.2f}x")


if __name__ == "__main__":
    main()
