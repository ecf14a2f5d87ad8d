"""Wall-clock time of forward passes, measured with ``torch.utils.benchmark``.

Everything the course times goes through ``time_calls``: the calls being compared are timed in
interleaved rounds and each keeps its fastest round, so that a slow spell of the machine (another
process, a clock change) hits all of them alike instead of one. Batch 1 cycles through
``BATCH_ONE_IMAGES`` images (``timing_slices``): a dynamic network's time depends on what it
decides for the image, and one image would stand for its decisions only.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils import benchmark

from dyninf.batches import model_inputs
from dyninf.cost import network_cost
from dyninf.dynamic import DynamicNetwork, predict_with_decisions, spent_macs
from dyninf.report import device_name

BATCH_ONE_IMAGES = 16   # batch 1 cycles through this many images (and their decisions)
ROUNDS = 3              # interleaved timing rounds; the fastest round counts
# Timings of one run on a shared machine drift by about 10%: within it, "about as fast"
TIMING_NOISE = 0.1


def timing_slices(count: int, batch_size: int) -> list[slice]:
    """The batches to time among ``count`` images: batch 1 takes the first ``BATCH_ONE_IMAGES``
    one by one, a larger batch size the first ``batch_size`` images as one batch."""
    if batch_size < 1 or count < batch_size:
        raise ValueError(f"expected 1 <= batch_size <= {count} (the images given), got {batch_size}")
    if batch_size == 1:
        return [slice(i, i + 1) for i in range(min(BATCH_ONE_IMAGES, count))]
    return [slice(0, batch_size)]


def time_calls(calls: dict[str, Callable], inputs: Sequence[tuple], min_run_time: float = 0.5,
               rounds: int = ROUNDS) -> dict[str, float]:
    """Seconds per call of each of ``calls`` (name -> function), each called with every tuple of
    ``inputs`` in turn, without autograd and with all of PyTorch's threads (``benchmark.Timer``
    defaults to one): the median over ``rounds`` x (``min_run_time`` / ``rounds``) seconds of
    repeats, in interleaved rounds, fastest round kept."""
    if not inputs:
        raise ValueError("expected at least one input to time the calls on")
    seconds = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            timer = benchmark.Timer(stmt="with torch.no_grad():\n    for item in inputs: call(*item)",
                                    globals={"torch": torch, "call": call, "inputs": inputs},
                                    num_threads=torch.get_num_threads())
            median = timer.blocked_autorange(min_run_time=min_run_time / rounds).median
            seconds[name] = min(seconds[name], median / len(inputs))
    return seconds


def cuda_graph_replay(module: nn.Module, example: torch.Tensor, warmup: int = 3) -> Callable:
    """``module(x)`` recorded once as a CUDA graph for inputs shaped like ``example``, returned as
    a function that copies ``x`` into the graph's input and replays it (no autograd; the output
    tensor is reused by the next call). Replaying launches every kernel in one call, without the
    host's per-operator cost: the best time a static network can have on this GPU, the honest
    baseline for a dynamic one (whose decisions a single recorded graph cannot follow)."""
    if example.device.type != "cuda":
        raise ValueError(f"a CUDA graph needs inputs on a CUDA device, got {example.device}")
    static_input = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):   # warm-up on a side stream, as capture requires
        for _ in range(warmup):
            module(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_output = module(static_input)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_input.copy_(x)
        graph.replay()
        return static_output

    return replay


def compare_modes(plain: Callable, run: Callable, inputs: Sequence[tuple],
                  min_run_time: float = 0.5) -> dict[str, float]:
    """Seconds per call of ``plain(x)`` and of ``run(x, *rest, mode=...)`` in masked and skipped
    mode over ``inputs`` (tuples ``(x, *rest)``), and the largest difference between the masked
    and the skipped outputs (the two modes must agree)."""
    with torch.no_grad():
        masked = torch.cat([run(*item, mode="masked") for item in inputs])
        skipped = torch.cat([run(*item, mode="skipped") for item in inputs])
    seconds = time_calls({"plain": lambda x, *rest: plain(x),
                          "masked": lambda *item: run(*item, mode="masked"),
                          "skipped": lambda *item: run(*item, mode="skipped")}, inputs, min_run_time)
    return {**seconds, "max |masked - skipped|": (masked - skipped).abs().max().item()}


def ideal_speedup(plain: nn.Module, net: nn.Module, images: torch.Tensor,
                  decisions: torch.Tensor | None = None, device: torch.device | str = "cpu") -> float:
    """The speed-up over ``plain`` that MACs promise for ``images``: the plain network's MACs over
    the mean MACs the images spend, either with the fixed (N, num_blocks) ``decisions`` (``net`` is
    then a backbone shaped like ``plain``) or with those the dynamic ``net`` takes for them, its
    decider's own MACs included."""
    plain_cost = network_cost(plain)
    if decisions is not None:
        spent = plain_cost.spent_macs(decisions)
    elif isinstance(net, DynamicNetwork):
        spent = spent_macs(net, predict_with_decisions(net, images, device=device)[1])
    else:
        raise TypeError(f"the ideal speed-up needs a DynamicNetwork, which decides for itself, or fixed "
                        f"decisions for a backbone; got a {type(net).__name__} without decisions")
    return plain_cost.total_macs / spent.mean().item()


def speedup_table(plain: nn.Module, net: nn.Module, images: torch.Tensor, batch_sizes: Iterable[int],
                  label: str, device: torch.device | str = "cpu", min_run_time: float = 0.5,
                  decisions: torch.Tensor | None = None) -> pd.DataFrame:
    """Time per batch of a dynamic ``net`` in masked and in skipped mode against the ``plain``
    network, at each batch size, on the first of ``images`` (uint8 test images: a decider decides
    on what it sees, so random inputs would mislead; batch 1 cycles through several), beside the
    ``ideal_speedup`` of the images timed: the measured speed-up and realized / ideal.
    ``decisions``: fixed (N, num_blocks) block decisions for ``images``, passed to ``net`` (then a
    backbone) with them, instead of a decider's."""
    plain, net = plain.to(device).eval(), net.to(device).eval()

    def inputs_for(part: slice) -> tuple:
        x = model_inputs(images[part], device)
        return (x,) if decisions is None else (x, decisions[part].to(device))

    def run(x, *fixed, mode):
        return net(x, mode=mode) if not fixed else net(x, decisions=fixed[0], mode=mode)

    rows = []
    for batch_size in batch_sizes:
        slices = timing_slices(len(images), batch_size)
        timed_images = slice(0, slices[-1].stop)
        ideal = ideal_speedup(plain, net, images[timed_images],
                              None if decisions is None else decisions[timed_images], device)
        timed = compare_modes(plain, run, [inputs_for(part) for part in slices], min_run_time)
        for mode in ("masked", "skipped"):
            speedup = timed["plain"] / timed[mode]
            rows.append({"batch": batch_size, "mode": f"{label} {mode}", "ms per batch": 1e3 * timed[mode],
                         "plain ms": 1e3 * timed["plain"], "speed-up": speedup,
                         "ideal speed-up": ideal, "realized / ideal": speedup / ideal})
    return pd.DataFrame(rows)


def measure_training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                          min_run_time: float = 2.0) -> float:
    """Mean seconds for one SGD step (forward, cross-entropy, backward, update) of ``model`` in
    train mode on a fixed batch. The mean, not the median: a random decider's cost varies from
    step to step, and an epoch pays the mean. ``model`` is trained by this, so pass a copy."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    timer = benchmark.Timer(stmt="step()", globals={"step": step},
                            num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).mean


def _pace(ratio: float) -> str:
    """A measured speed ratio (> 1: faster) in words, with "about as fast" inside the noise."""
    if ratio >= 1 + TIMING_NOISE:
        return f"{ratio:.2f}x faster than"
    if ratio <= 1 - TIMING_NOISE:
        return f"slower than ({1 / ratio:.2f}x the time of)"
    return f"about as fast as ({ratio:.2f}x)"


def _why_not(device: torch.device | str, what: str) -> str:
    if torch.device(device).type == "cuda":
        return (f" Where {what} does not pay here, it is not the arithmetic: a GPU runs a small network's "
                f"convolutions faster than the host can launch them, so the time follows the number of "
                f"operations launched, not the MACs; and skipped mode must read the decisions back to the "
                f"host before the blocks run (once per batch, or once per gated block for a decider that "
                f"decides block by block), while the GPU waits for the host's next launch.")
    return (f" Where {what} does not pay here, its bookkeeping (gathering and scattering images, the "
            f"decider's many small operations) costs more than the work it saves.")


def speedup_verdict(table: pd.DataFrame, mode: str, device: torch.device | str) -> str:
    """This run's measured speed-up of ``mode`` (rows of a ``speedup_table``) in words, batch size
    by batch size: faster, slower or about as fast as the plain network (within the timing noise),
    beside the ideal speed-up from MACs; and, where it does not pay, why on this kind of device."""
    rows = table[table["mode"] == mode]
    if rows.empty:
        raise ValueError(f"no rows of mode {mode!r} in the table; modes: {sorted(table['mode'].unique())}")
    parts = [f"at batch {row['batch']} it ran {_pace(row['speed-up'])} the plain network "
             f"(ideal {row['ideal speed-up']:.2f}x from MACs)" for _, row in rows.iterrows()]
    text = f"On {device_name(device)}, {mode}: " + "; ".join(parts) + "."
    if (rows["speed-up"] < 1 + TIMING_NOISE).any():
        text += _why_not(device, "skipping")
    return text


def training_step_verdict(ratio: float, ideal: float, device: torch.device | str, what: str) -> str:
    """This run's measured time of a ``what`` training step over a plain one, in words."""
    speed = 1 / ratio
    text = (f"On {device_name(device)}, a {what} training step ran {_pace(speed)} a plain one "
            f"(time ratio {ratio:.2f}; ideal, from MACs: {ideal:.2f}).")
    if speed < 1 + TIMING_NOISE:
        text += _why_not(device, what)
    return text
