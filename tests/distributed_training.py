"""Run by tests/test_distributed.py under torchrun (``--nproc_per_node=2``, gloo on the CPU): the
course's training loop on a small synthetic task, as every process of a distributed run runs it.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_training.py METHOD RUN_DIR EPOCHS [FAIL_RANK [FAIL_EPOCH]]

trains METHOD (plain, sd, aig, gaternet, blockdrop: a ResNet-8 of width 8 with each method's decider
and loss terms, as dyninf.course.trained sets them up) for EPOCHS epochs into RUN_DIR (resuming what
is there); with FAIL_RANK, that process raises in the first training step of epoch FAIL_EPOCH
(counted from 0; default 0), as a process whose GPU failed would. METHOD ``trainings``: every
training of the quick profile's dry run (dyninf.course.trainings.train_all), on synthetic images,
with RUN_DIR as the course's folder (DYNINF_HOME).
"""
import os
import sys

import torch

from dyninf.course.trained import blockdrop_losses
from dyninf.data.cifar import synthetic_dataset
from dyninf.deciders import AIGGates, BlockDropPolicy, Gater, StochasticDepth, gate_sparsity_loss, target_rate_loss
from dyninf.network.backbones import cifar_resnet
from dyninf.network.dynamic import DynamicNetwork
from dyninf.training.loop import TrainConfig, fit

CONFIG_KW = dict(batch_size=16, lr=0.05, schedule="onecycle", seed=3)
METHODS = ("plain", "sd", "aig", "gaternet", "blockdrop")


def method(name: str):
    """(network, extra losses, logged metrics) of ``name``, seeded."""
    torch.manual_seed(0)
    backbone = cifar_resnet(8, width=8)
    if name == "plain":
        return backbone, {}, {}
    if name == "sd":
        return DynamicNetwork(backbone, StochasticDepth(backbone.num_blocks, 0.5, mode="batch"),
                              train_mode="skipped", eval_mode="skipped"), {}, {}
    if name == "aig":
        net = DynamicNetwork(backbone, AIGGates(backbone), train_mode="masked", eval_mode="skipped")
        return net, {"target_loss": lambda step: target_rate_loss(step.decisions, 0.5, net.decider.gated_blocks)}, {}
    if name == "gaternet":
        net = DynamicNetwork(backbone, Gater.for_backbone(backbone, depth=8, width=4, bottleneck=16),
                             train_mode="masked", eval_mode="skipped")
        return net, {"sparsity_loss": lambda step: 0.5 * gate_sparsity_loss(step.decisions)}, {}
    if name == "blockdrop":
        net = DynamicNetwork(backbone, BlockDropPolicy.for_backbone(backbone, depth=8, width=4),
                             train_mode="masked", eval_mode="skipped")
        return (net, *blockdrop_losses(0.5, 0.01))
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")


def data():
    return synthetic_dataset(train_per_class=8, test_per_class=4)


def main(name: str, run_dir: str, epochs: int, fail_rank: int | None = None, fail_epoch: int = 0) -> None:
    torch.set_num_threads(1)
    network, extra, metrics = method(name)
    epoch_now = [0]
    if fail_rank is not None:
        def failing(step):
            if torch.distributed.get_rank() == fail_rank and epoch_now[0] >= fail_epoch:
                raise RuntimeError(f"process {fail_rank} fails on purpose in epoch {epoch_now[0] + 1}")
            return step.logits.sum() * 0
        extra = {**extra, "failing": failing}
    fit(network, data(), TrainConfig(epochs=epochs, **CONFIG_KW), run_dir, device="cpu", extra_losses=extra,
        metrics=metrics, on_epoch_start=lambda model, epoch: epoch_now.__setitem__(0, epoch), progress=False)


def every_training(home: str) -> None:
    os.environ["DYNINF_HOME"] = home   # the dry run's runs/ there
    from dyninf.course.profiles import get_profile
    from dyninf.course.trainings import train_all

    torch.set_num_threads(1)
    train_all(get_profile("quick", device="cpu").dry_run(), synthetic_dataset(train_per_class=2, test_per_class=2))


if __name__ == "__main__":
    if sys.argv[1] == "trainings":
        every_training(sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
