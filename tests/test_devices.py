"""The course on every device: each test runs on the CPU and, where one is present, on CUDA (the
``cuda`` variants are skipped without a GPU; `make gpu-check` runs them on one). On the CPU the
bf16 cases run under CPU bf16 autocast, which rounds as CUDA's does."""
import contextlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import settled_resnet

import dyninf.network.backbones as backbones
import dyninf.training.loop as train_module
from dyninf.network.backbones import cifar_resnet
from dyninf.data.batches import model_inputs
from dyninf.data.cifar import synthetic_dataset
from dyninf.deciders import AIGGates, BlockDropPolicy, Gater, calibrate_thresholds, random_decisions
from dyninf.decisions import DeciderKind
from dyninf.network.dynamic import DynamicNetwork, mode_agreement, predict_with_decisions
from dyninf.training.loop import TrainConfig, fit, load_history
from dyninf.network.precision import RELATIVE_TOLERANCE, inference_dtype, logit_tolerance

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def bf16(device: str):
    """bf16 autocast as the course uses it on CUDA (there ``predict`` and ``fit`` turn it on
    themselves); on the CPU, the same rounding by hand."""
    if device == "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_tolerances_by_hand():
    logits = torch.tensor([[0.5, -3.0], [2.0, 0.0]])
    assert logit_tolerance(torch.float32, logits) == pytest.approx(3e-5)        # scale 3
    assert logit_tolerance(torch.bfloat16, logits / 10) == 2 ** -5               # scale at least 1
    assert inference_dtype("cpu") == torch.float32 and inference_dtype("cuda") == torch.bfloat16
    assert RELATIVE_TOLERANCE[torch.bfloat16] > 100 * RELATIVE_TOLERANCE[torch.float32]
    with pytest.raises(ValueError, match="no tolerance for torch.float16"):
        logit_tolerance(torch.float16, logits)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 32])
def test_masked_and_skipped_agree_in_bf16_within_its_tolerance(device, batch):
    net = settled_resnet(20).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    decisions = random_decisions(batch, net.num_blocks, 0.5, seed=2).to(device)
    gates = (torch.rand(batch, net.num_filter_gates) < 0.6).float().to(device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        for given in ({"decisions": decisions}, {"filter_gates": gates}):
            masked = net(x, mode="masked", **given).float()
            skipped = net(x, mode="skipped", **given).float()
            assert (masked - skipped).abs().max().item() <= logit_tolerance(torch.bfloat16, masked), given.keys()


def _dynamic_networks(device):
    """One network of each decider kind, with deciders that decide differently per image."""
    torch.manual_seed(0)
    aig_backbone = cifar_resnet(8)
    aig = DynamicNetwork(aig_backbone, AIGGates(aig_backbone))
    for gate in aig.decider.gates.values():
        torch.nn.init.normal_(gate.fc2.weight, std=3.0)
        torch.nn.init.zeros_(gate.fc2.bias)
    gater_backbone = cifar_resnet(8)
    gater = Gater.for_backbone(gater_backbone, depth=8, width=4, bottleneck=16)
    torch.nn.init.normal_(gater.fc2.weight, std=3.0)
    torch.nn.init.zeros_(gater.fc2.bias)
    policy_backbone = cifar_resnet(8)
    policy = BlockDropPolicy.for_backbone(policy_backbone, depth=8, width=4)
    torch.nn.init.normal_(policy.extractor.head[-1].weight, std=3.0)
    torch.nn.init.zeros_(policy.extractor.head[-1].bias)
    nets = {"AIG": aig, "GaterNet": DynamicNetwork(gater_backbone, gater),
            "BlockDrop": DynamicNetwork(policy_backbone, policy)}
    for net in nets.values():   # batch-norm statistics settled on images like the test's
        net.train()
        with torch.no_grad():
            for seed in range(3):
                net(model_inputs(_images(32, seed=10 + seed)))
    calibrate_thresholds(aig, _images(64, seed=20), 0.5)   # similar images: gates set to split them
    return {name: net.to(device, memory_format=torch.channels_last).eval() for name, net in nets.items()}


@pytest.mark.parametrize("device", DEVICES)
def test_mode_agreement_of_every_decider_kind_and_of_fixed_decisions(device):
    images = _images(96)
    for name, net in _dynamic_networks(device).items():
        _, decisions = predict_with_decisions(net, images, device=device)
        assert 0 < decisions.mean() < 1, name   # some images skip some work
        agreement = mode_agreement(net, images, device=device, batch_size=32)
        assert agreement["agree"] and agreement["max |masked - skipped|"] <= agreement["tolerance"], (name, agreement)
        assert agreement["tolerance"] >= RELATIVE_TOLERANCE[inference_dtype(device)]
        assert agreement["precision"] == {"cpu": "float32", "cuda": "bfloat16"}[device]
        if name != "AIG":   # a global decider decides before the backbone runs: the same in both modes
            assert agreement["same decisions when each mode decides"] == 1.0, name
    backbone = settled_resnet(8).to(device)
    agreement = mode_agreement(backbone, images, decisions=random_decisions(96, 3, 0.5, seed=4), device=device)
    assert agreement["agree"] and agreement["same decisions when each mode decides"] == 1.0


def test_mode_agreement_compares_the_same_decisions_when_masked_mode_decides_otherwise():
    class Alternating(torch.nn.Module):
        """Runs every other image, a different half on each forward pass (as a gate tipping would)."""

        kind = DeciderKind.PER_BLOCK

        def __init__(self):
            super().__init__()
            self.passes = 0

        def forward(self, index, block_input):
            self.passes += index == 0
            decisions = torch.zeros(len(block_input))
            decisions[self.passes % 2::2] = 1
            return decisions

    net = DynamicNetwork(settled_resnet(8), Alternating())
    agreement = mode_agreement(net, _images(32), device="cpu")
    assert agreement["same decisions when each mode decides"] == 0.0 and agreement["agree"], agreement


def test_mode_agreement_catches_a_skipped_mode_that_computes_something_else(monkeypatch):
    images = _images(32)
    net = settled_resnet(8)
    decisions = random_decisions(32, 3, 0.5, seed=4)
    monkeypatch.setattr(backbones, "scaled_residual", lambda residual, run, scaled: 0.9 * residual)   # a wrong skipped mode
    agreement = mode_agreement(net, images, decisions=decisions, device="cpu")
    assert not agreement["agree"] and agreement["max |masked - skipped|"] > agreement["tolerance"]


@pytest.mark.parametrize("device", DEVICES)
def test_aig_calibration_hits_the_target_rate_in_the_devices_precision(device):
    # On CUDA inference runs under bf16 autocast; there an undecided gate's margins took a few
    # distinct values, and calibrated rates missed t badly (0.031 for a target of 0.5).
    torch.manual_seed(0)
    backbone = cifar_resnet(8)
    net = DynamicNetwork(backbone, AIGGates(backbone)).to(device, memory_format=torch.channels_last)
    for gate in net.decider.gates.values():   # undecided gates: margins close together
        torch.nn.init.normal_(gate.fc2.weight, std=0.01)
    images = _images(300, seed=1)
    with bf16(device):
        calibrate_thresholds(net, images, 0.5, device=device)
        _, decisions = predict_with_decisions(net, images, device=device)
    rates = decisions[:, net.decider.gated_blocks].mean(0)
    assert torch.allclose(rates, torch.full_like(rates, 0.5), atol=2 / 300), rates


@pytest.mark.parametrize("device", DEVICES)
def test_training_in_the_devices_precision_resumes_from_its_checkpoint(device, tmp_path, monkeypatch):
    data = synthetic_dataset(train_per_class=16, test_per_class=4)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=3)
    original = train_module._train_one_epoch

    def interrupted(model, batches, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(model, batches, epoch, *args)

    torch.manual_seed(0)
    reference = fit(cifar_resnet(8, width=8), data, config, tmp_path / "reference", device=device, progress=False)
    monkeypatch.setattr(train_module, "_train_one_epoch", interrupted)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(cifar_resnet(8, width=8), data, config, tmp_path / "run", device=device, progress=False)
    monkeypatch.setattr(train_module, "_train_one_epoch", original)
    net = cifar_resnet(8, width=8)
    resumed = fit(net, data, config, tmp_path / "run", device=device, progress=False)
    assert list(resumed.epoch) == [1, 2] and len(load_history(tmp_path / "run")) == 2
    assert next(net.parameters()).device.type == device
    # the same run as without the interruption: on the CPU exactly, on CUDA up to its
    # non-deterministic kernels (cuDNN's backward passes add in varying order)
    tolerance = 1e-6 if device == "cpu" else 0.05
    assert resumed.train_loss.notna().all()
    assert resumed.train_loss.tolist() == pytest.approx(reference.train_loss.tolist(), rel=tolerance)


@pytest.mark.cuda
@pytest.mark.parametrize("mode,batch", [("masked", 4), ("skipped", 4), ("skipped", 1)])
def test_decisions_on_the_cpu_with_images_on_cuda_are_a_clear_error_in_every_mode(mode, batch):
    net = cifar_resnet(8).cuda()
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    with pytest.raises(ValueError, match="on cpu, the images on cuda"):
        net(x, decisions=torch.ones(batch, 3), mode=mode)
    with pytest.raises(ValueError, match="on cpu, the images on cuda"):
        net(x, decisions=lambda index, h: torch.ones(batch), mode=mode)


@pytest.mark.cuda
def test_the_tiny_benchmark_runs_on_cuda(tmp_path):
    # It crashed at once on CUDA: random decisions made on the CPU, images on the GPU.
    script = Path(__file__).parents[1] / "benchmarks" / "skipping.py"
    spec = importlib.util.spec_from_file_location("skipping_benchmark_cuda", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--device", "cuda", "--out", str(tmp_path), "--keep", "0.5"]) == 0
    payload = json.loads((tmp_path / "skipping-quick.json").read_text())
    assert "CPU" not in payload["device"] and all(row["max |masked - skipped|"] < 1e-2 for row in payload["rows"])
