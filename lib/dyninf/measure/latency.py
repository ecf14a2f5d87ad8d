"""Wall-clock time of forward passes, measured with ``torch.utils.benchmark``.

Everything the course times goes through ``time_rounds``: the calls being compared are timed in
interleaved rounds (every call once per round, in turn), so that a slow spell of the machine
(another process, a clock change) hits all of them alike instead of one. ``time_calls`` keeps each
call's fastest round. A speed-up carries its spread: ``paired_speedup`` gives the one of the
fastest rounds and the lowest and highest of the rounds one by one, and it counts as measured only
where every round agrees on which side of 1 it lies (``speedup_reading``; a reading that cannot be
true, masked mode beating the plain network or skipping beating its ideal from MACs, is flagged as
noise). Batch 1 cycles through ``BATCH_ONE_IMAGES`` images (``timing_slices``): a dynamic network's
time depends on what it decides for the image, and one image would stand for its decisions only.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from time import perf_counter
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import pandas as pd
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils import benchmark

from dyninf.data.batches import model_inputs
from dyninf.network.cost import network_cost
from dyninf.network.dynamic import DynamicNetwork, predict_with_decisions, spent_macs
from dyninf.utils.devices import device_name

BATCH_ONE_IMAGES = 16   # batch 1 cycles through this many images (and their decisions)
ROUNDS = 5              # interleaved timing rounds: the fastest counts, all of them give the spread

FASTER, SLOWER, NO_DIFFERENCE = "faster", "slower", "no measurable difference"
MASKED_NOISE = "noise: masked cannot beat plain"
ABOVE_IDEAL_NOISE = "noise: above the ideal from MACs"
NOISE_READINGS = (MASKED_NOISE, ABOVE_IDEAL_NOISE)


def timing_slices(count: int, batch_size: int) -> list[slice]:
    """The batches to time among ``count`` images: batch 1 takes the first ``BATCH_ONE_IMAGES``
    one by one, a larger batch size the first ``batch_size`` images as one batch."""
    if batch_size < 1 or count < batch_size:
        raise ValueError(f"expected 1 <= batch_size <= {count} (the images given), got {batch_size}")
    if batch_size == 1:
        return [slice(i, i + 1) for i in range(min(BATCH_ONE_IMAGES, count))]
    return [slice(0, batch_size)]


def time_rounds(calls: dict[str, Callable], inputs: Sequence[tuple], min_run_time: float = 0.5,
                rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls`` (name -> function) in each of ``rounds`` interleaved
    rounds (each round times every call once, in turn), each call called with every tuple of
    ``inputs`` in turn, without autograd and with all of PyTorch's threads (``benchmark.Timer``
    defaults to one): per round the median over ``min_run_time`` / ``rounds`` seconds of repeats."""
    if not inputs:
        raise ValueError("expected at least one input to time the calls on")
    if rounds < 1:
        raise ValueError(f"expected at least one round, got {rounds}")
    timers = {name: benchmark.Timer(stmt="with torch.no_grad():\n    for item in inputs: call(*item)",
                                    globals={"torch": torch, "call": call, "inputs": inputs},
                                    num_threads=torch.get_num_threads())
              for name, call in calls.items()}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, timer in timers.items():
            seconds[name].append(timer.blocked_autorange(min_run_time=min_run_time / rounds).median / len(inputs))
    return seconds


def time_breakdown(calls: dict[str, Callable], inputs: Sequence[tuple], min_run_time: float = 0.5,
                   rounds: int = ROUNDS) -> pd.DataFrame:
    """Where the time of each of ``calls`` goes, per call (a row each): its time (the fastest of
    ``time_rounds``' interleaved rounds) split into the convolutions, the other operators and the
    host's time between operators (Python: the network's loop, its checks, a decider's and skipped
    mode's bookkeeping). The split comes from one pass over ``inputs`` under ``torch.profiler``,
    each operator's own time (its children's excluded) as a share of that pass's wall time, applied
    to the time measured without the profiler (which slows every operator a little)."""
    timed = time_calls(calls, inputs, min_run_time, rounds)
    rows = []
    for name, call in calls.items():
        with native_stderr_silenced(), torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as profiled:
            start = perf_counter()
            for item in inputs:
                call(*item)
            wall = perf_counter() - start
        own = [(event.key, event.self_cpu_time_total / 1e6) for event in profiled.key_averages()]
        convolutions = sum(seconds for key, seconds in own if "conv" in key) / wall
        others = min(sum(seconds for key, seconds in own if "conv" not in key) / wall, 1 - convolutions)
        ms = 1e3 * timed[name]
        rows.append({"call": name, "ms": ms, "convolutions ms": ms * convolutions,
                     "other operators ms": ms * others, "host between operators ms": ms * (1 - convolutions - others)})
    return pd.DataFrame(rows)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """The process's standard error (file descriptor 2) sent nowhere within the block: PyTorch's
    profiler (kineto) writes its start, its stop and, in a CUDA build on a machine without a GPU, an
    error about the missing device there, from C++, where a notebook shows it as the cell's output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as nowhere:
            os.dup2(nowhere.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def time_calls(calls: dict[str, Callable], inputs: Sequence[tuple], min_run_time: float = 0.5,
               rounds: int = ROUNDS) -> dict[str, float]:
    """Seconds per call of each of ``calls``: its fastest round of ``time_rounds``."""
    return {name: min(seconds) for name, seconds in time_rounds(calls, inputs, min_run_time, rounds).items()}


class Speedup(NamedTuple):
    """A speed-up over a baseline timed in the same interleaved rounds: ``value`` of the fastest
    rounds, ``low`` and ``high`` the lowest and highest of the rounds one by one."""
    value: float
    low: float
    high: float

    @property
    def reading(self) -> str:
        """"faster" or "slower" where every round agrees, else "no measurable difference"."""
        if self.low > 1:
            return FASTER
        if self.high < 1:
            return SLOWER
        return NO_DIFFERENCE


def paired_speedup(base: Sequence[float], case: Sequence[float]) -> Speedup:
    """The speed-up of ``case`` over ``base`` from their seconds per round (``time_rounds``):
    min(base) / min(case), and the range of base_i / case_i, pairing the same round (interleaved,
    the two met the same spells of the machine)."""
    if not base or len(base) != len(case):
        raise ValueError(f"expected the same number (> 0) of rounds for both, got {len(base)} and {len(case)}")
    ratios = [b / c for b, c in zip(base, case)]
    return Speedup(min(base) / min(case), min(ratios), max(ratios))


def speedup_reading(speedup: Speedup, *, masked: bool = False, ideal: float | None = None) -> str:
    """``speedup.reading``, or a noise flag where it cannot be true: ``masked`` mode measurably
    faster than the plain network (it computes every block, and the decisions besides), or a
    case that skips work with even its slowest round above its ``ideal`` speed-up from MACs."""
    if masked and speedup.low > 1:
        return MASKED_NOISE
    if ideal is not None and speedup.low > ideal:
        return ABOVE_IDEAL_NOISE
    return speedup.reading


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


def torchscript_frozen(module: nn.Module, example: torch.Tensor) -> Callable:
    """``module`` in eval mode traced by TorchScript on inputs shaped like ``example`` and frozen:
    its weights constants, its batch norms folded, its operators run by TorchScript's interpreter
    without Python between them. On a CPU the best time a static network had on this course's
    machine (at batch 1, a ResNet-20 took 0.55-0.7 of its eager time; ``torch.compile``'s default
    inductor took over twice its eager time there): the honest baseline beside the eager one, as
    the CUDA graph is on a GPU, and one that no dynamic network can be (a trace records one path)."""
    with torch.no_grad(), warnings.catch_warnings():
        # the network's input checks are Python branches: the trace keeps the path taken
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # TorchScript is deprecated for torch.compile and torch.export, but it is there from PyTorch
        # 2.11 to 2.14, and it is the faster of the two static baselines on this course's CPU
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        return torch.jit.freeze(torch.jit.trace(module.eval(), example, check_trace=False))


def time_modes(plain: Callable, run: Callable, inputs: Sequence[tuple], min_run_time: float = 0.5,
               others: dict[str, Callable] | None = None,
               rounds: int = ROUNDS) -> tuple[dict[str, list[float]], float]:
    """Seconds per call in each round (``time_rounds``) of ``plain(x)``, of ``run(x, *rest,
    mode=...)`` in masked and skipped mode and of ``others`` (called with ``(x, *rest)``), all in
    the same interleaved rounds, over ``inputs`` (tuples ``(x, *rest)``); and the largest
    difference between the masked and the skipped outputs (the two modes must agree)."""
    with torch.no_grad():
        masked = torch.cat([run(*item, mode="masked") for item in inputs])
        skipped = torch.cat([run(*item, mode="skipped") for item in inputs])
    calls = {"plain": lambda x, *rest: plain(x),
             "masked": lambda *item: run(*item, mode="masked"),
             "skipped": lambda *item: run(*item, mode="skipped"), **(others or {})}
    return time_rounds(calls, inputs, min_run_time, rounds), (masked - skipped).abs().max().item()


def compare_modes(plain: Callable, run: Callable, inputs: Sequence[tuple],
                  min_run_time: float = 0.5) -> dict[str, float]:
    """Seconds per call (fastest round) of ``plain(x)`` and of ``run(x, *rest, mode=...)`` in
    masked and skipped mode over ``inputs`` (tuples ``(x, *rest)``), and the largest difference
    between the masked and the skipped outputs (``time_modes``)."""
    rounds, difference = time_modes(plain, run, inputs, min_run_time)
    return {**{name: min(seconds) for name, seconds in rounds.items()}, "max |masked - skipped|": difference}


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


def whole_set_ideal_note(plain: nn.Module, net: nn.Module, images: torch.Tensor,
                         device: torch.device | str = "cpu") -> str:
    """A sentence setting a ``speedup_table``'s ideal speed-ups (those of the few images timed)
    beside the ideal over all of ``images``: the two can give opposite impressions."""
    whole = ideal_speedup(plain, net, images, device=device)
    text = (f"The table's ideal speed-ups are those of the images timed (at batch 1 the first {BATCH_ONE_IMAGES}, "
            f"at a larger batch its first images); over all {len(images):,} test images the ideal is {whole:.3f}x")
    if whole < 1:
        text += (", below 1: on average these images spend more MACs than the plain network, so no way of "
                 "skipping can make this network faster than it")
    return text + "."


def speedup_table(plain: nn.Module, net: nn.Module, images: torch.Tensor, batch_sizes: Iterable[int],
                  label: str, device: torch.device | str = "cpu", min_run_time: float = 0.5,
                  decisions: torch.Tensor | None = None) -> pd.DataFrame:
    """Time per batch of a dynamic ``net`` in masked and in skipped mode against the ``plain``
    network, at each batch size, on the first of ``images`` (uint8 test images: a decider decides
    on what it sees, so random inputs would mislead; batch 1 cycles through several), beside the
    ``ideal_speedup`` of the images timed: the measured speed-up (fastest rounds), its range over
    the rounds ("speed-up low", "speed-up high"), realized / ideal and the ``speedup_reading``
    ("reading"). ``decisions``: fixed (N, num_blocks) block decisions for ``images``, passed to
    ``net`` (then a backbone) with them, instead of a decider's."""
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
        rounds, _ = time_modes(plain, run, [inputs_for(part) for part in slices], min_run_time)
        for mode in ("masked", "skipped"):
            speedup = paired_speedup(rounds["plain"], rounds[mode])
            reading = (speedup_reading(speedup, masked=True) if mode == "masked"
                       else speedup_reading(speedup, ideal=ideal))
            rows.append({"batch": batch_size, "mode": f"{label} {mode}", "ms per batch": 1e3 * min(rounds[mode]),
                         "plain ms": 1e3 * min(rounds["plain"]), "speed-up": speedup.value,
                         "speed-up low": speedup.low, "speed-up high": speedup.high,
                         "ideal speed-up": ideal, "realized / ideal": speedup.value / ideal, "reading": reading})
    return pd.DataFrame(rows)


def measure_training_steps(models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor,
                           rounds: int = ROUNDS, min_run_time: float = 2.0) -> dict[str, list[float]]:
    """Mean seconds for one SGD step (forward, cross-entropy, backward, update) of each of
    ``models`` (name -> model) in train mode on a fixed batch, in each of ``rounds`` interleaved
    rounds (every model once per round, in turn; ``min_run_time`` seconds per model in all). The
    mean, not the median: a random decider's cost varies from step to step, and an epoch pays the
    mean. The models are trained by this, so pass copies."""
    if rounds < 1:
        raise ValueError(f"expected at least one round, got {rounds}")

    def step_of(model: nn.Module) -> Callable:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()

        return step

    timers = {name: benchmark.Timer(stmt="step()", globals={"step": step_of(model)},
                                    num_threads=torch.get_num_threads())
              for name, model in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, timer in timers.items():
            seconds[name].append(timer.blocked_autorange(min_run_time=min_run_time / rounds).mean)
    return seconds


def measure_training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                          min_run_time: float = 2.0) -> float:
    """Mean seconds for one SGD step of ``model`` (``measure_training_steps``, one round)."""
    return measure_training_steps({"model": model}, images, labels, rounds=1, min_run_time=min_run_time)["model"][0]


def _why_not(device: torch.device | str, what: str) -> str:
    if torch.device(device).type == "cuda":
        return (f" Where {what} does not pay here, it is not the arithmetic: a GPU runs a small network's "
                f"convolutions faster than the host can launch them, so the time follows the number of "
                f"operations launched, not the MACs; and skipped mode must read the decisions back to the "
                f"host before the blocks run (once per batch, or once per gated block for a decider that "
                f"decides block by block), while the GPU waits for the host's next launch.")
    return (f" Where {what} does not pay here, its bookkeeping (gathering and scattering images, the "
            f"decider's many small operations) costs more than the work it saves.")


def _fell_short(time_ratio: float, ideal_time_ratio: float) -> bool:
    """Whether a measured time ratio (dynamic over plain) saved less than half of what the MACs
    promise: then the bookkeeping or the device is why; else the rounds' spread is."""
    return ideal_time_ratio >= 1 or (1 - time_ratio) < 0.5 * (1 - ideal_time_ratio)


def _too_noisy(what: str) -> str:
    return (f" The mean saved over half of what the MACs promise, but the rounds disagree: their spread (load on "
            f"the machine; for a random decider, each round's own draws) is as wide as the saving, so this run "
            f"cannot tell {what} from a plain network.")


_NOT_A_GAIN = "timing noise (the plain network's rounds ran slow), not a gain"


def _reading_words(row: pd.Series) -> str:
    """One row of a ``speedup_table`` in words, from its reading and its range over the rounds."""
    value, rounds = row["speed-up"], f"rounds {row['speed-up low']:.2f}-{row['speed-up high']:.2f}x"
    ideal = f"{row['ideal speed-up']:.2f}x"
    if row["reading"] == MASKED_NOISE:
        return (f"it read {value:.2f}x ({rounds}), faster than the plain network, which masked mode cannot be "
                f"(it computes every block, and the decisions besides): {_NOT_A_GAIN}")
    if row["reading"] == ABOVE_IDEAL_NOISE:
        return f"it read {value:.2f}x ({rounds}), above the ideal {ideal} from MACs that skipping can at most reach: {_NOT_A_GAIN}"
    pace = {FASTER: "ran faster than the plain network", SLOWER: "ran slower than the plain network",
            NO_DIFFERENCE: "showed no measurable difference from the plain network"}[row["reading"]]
    return f"it {pace} ({value:.2f}x; {rounds}; ideal {ideal} from MACs)"


def speedup_verdict(table: pd.DataFrame, mode: str, device: torch.device | str) -> str:
    """This run's measured speed-up of ``mode`` (rows of a ``speedup_table``) in words, batch size
    by batch size, from its reading: faster or slower than the plain network where every round
    agrees, else no measurable difference, beside the ideal speed-up from MACs; a noise flag as
    noise; and, where skipping does not measurably pay, why on this kind of device."""
    rows = table[table["mode"] == mode]
    if rows.empty:
        raise ValueError(f"no rows of mode {mode!r} in the table; modes: {sorted(table['mode'].unique())}")
    parts = [f"at batch {row['batch']} {_reading_words(row)}" for _, row in rows.iterrows()]
    text = f"On {device_name(device)}, {mode}: " + "; ".join(parts) + "."
    level = rows[rows["reading"] == NO_DIFFERENCE]
    short = [_fell_short(1 / row["speed-up"], 1 / row["ideal speed-up"]) for _, row in level.iterrows()]
    if (rows["reading"] == SLOWER).any() or any(short):
        text += _why_not(device, "skipping")
    elif not level.empty:
        text += _too_noisy(f"{mode} mode")
    return text


def training_step_verdict(ratio: float, ideal: float, device: torch.device | str, what: str, *,
                          rounds: tuple[float, float] | None = None) -> str:
    """This run's measured time of a ``what`` training step over a plain one (``ratio``), in
    words; ``rounds``: the lowest and highest time ratio of the rounds one by one (paired, as
    ``measure_training_steps`` interleaves them), without which the ratio is a single timing whose
    spread is unknown. Faster or slower only where every round agrees, else no measurable
    difference."""
    if rounds is None:
        spread, low, high = "a single timing, its spread unmeasured", ratio, ratio
    else:
        low, high = rounds
        if low > high:
            raise ValueError(f"expected rounds=(lowest, highest) time ratio, got ({low}, {high})")
        spread = f"rounds {low:.2f}-{high:.2f}"
    numbers = f"(time ratio {ratio:.2f}, {spread}; ideal, from MACs: {ideal:.2f})"
    if high < 1:
        pace = f"ran {1 / ratio:.2f}x faster than a plain one {numbers}"
    elif low > 1:
        pace = f"ran slower than a plain one {numbers}"
    else:
        pace = f"showed no measurable difference from a plain one {numbers}"
    text = f"On {device_name(device)}, a {what} training step {pace}."
    if low > 1 or (high >= 1 and _fell_short(ratio, ideal)):
        text += _why_not(device, what)
    elif high >= 1:
        text += _too_noisy(f"a {what} step")
    return text
