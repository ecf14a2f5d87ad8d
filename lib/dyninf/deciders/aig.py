"""ConvNet-AIG (Veit & Belongie, ECCV 2018): a light gate before each residual block.

Each gate looks at its block's input (global average pooling -> FC -> BatchNorm -> ReLU -> FC)
and gives two logits, (skip, run). Training samples a hard decision with the straight-through
Gumbel-softmax (forward: 0 or 1; backward: the softmax's gradient); the noise keeps gates from
collapsing to always-on or always-off. Downsampling blocks always run.

Evaluation is deterministic (skipped execution needs a decision, not a sample): a block runs when
logit(run) - logit(skip) exceeds its gate's threshold. The official code samples at test time
instead. After a short run most gates are undecided (open probability near t for most images),
and the paper's "larger logit" rule then runs a layer far more or less often than t;
``calibrate_thresholds`` sets each threshold on held-out images so that the deterministic gate
runs its layer at the target rate, keeping the gates' ranking of the images.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from dyninf.network.backbones import CifarResNet
from dyninf.decisions import DeciderKind, check_batch_for_batch_norm
from dyninf.network.dynamic import DynamicNetwork
from dyninf.network.folding import derived, folded_linear_bn, folding_sources, inferring
from dyninf.network.inference import predict

SKIP, RUN = 0, 1


def check_target_rate(target: float) -> None:
    if not 0 < target <= 1:
        raise ValueError(f"the target rate t must be in (0, 1], got {target}")


def _full_precision(block_input: torch.Tensor):
    """Autocast switched off where it is on: the gates compute in their parameters' precision
    (float32). Under bf16 an undecided gate's margins collapse onto a few values, and a threshold
    cannot then pick a fraction t of the images; the gates' few MACs cost nothing in float32."""
    device_type = block_input.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class Gate(nn.Module):
    """Logits (batch, 2) = (skip, run) from a block's input (batch, channels, H, W), computed in
    float32 whatever the autocast around it."""

    def __init__(self, channels: int, hidden: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 2)
        # As in the official code: tiny last-layer weights and biases (skip 0.1, run 2.0), so a gate
        # starts open for about softmax(0.1, 2)[run] = 87% of samples, leaving the pretrained
        # or freshly initialised network intact while the gates learn.
        nn.init.normal_(self.fc2.weight, std=0.001)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([0.1, 2.0]))
        # Evaluation runs the block when logit(run) - logit(skip) > threshold: 0 is the paper's
        # larger logit; calibrate_thresholds moves it so that the layer runs at its target rate.
        self.register_buffer("threshold", torch.zeros(()))

    def forward(self, block_input: torch.Tensor) -> torch.Tensor:
        check_batch_for_batch_norm(self, len(block_input), "an AIG gate")
        with _full_precision(block_input):
            pooled = block_input.to(self.fc1.weight.dtype).mean(dim=(2, 3))
            return self.fc2(F.relu(self.bn(self.fc1(pooled))))

    def margin(self, block_input: torch.Tensor) -> torch.Tensor:
        """logit(run) - logit(skip) (batch,): what evaluation thresholds. Without autograd in eval
        mode, in four operations instead of about ten, since the gate runs before every block and
        at batch 1 its time is the number of its operations, not their size: the batch norm
        folded into the first layer (cached), the mean pooling into its scale, and the second
        layer reduced to the one direction the margin depends on."""
        if not inferring(self):
            logits = self(block_input)
            return logits[:, RUN] - logits[:, SKIP]
        with _full_precision(block_input):
            return self._folded_margin(block_input)

    def one_image_decision(self, block_input: torch.Tensor) -> float:
        """``margin > threshold`` for one image on a CPU, in eval mode, without autograd or
        autocast, as a number (1.0: run, 0.0: skip). The same operations as ``margin``, with none
        of its checks, which the caller has made: this runs before every gated block, where at batch
        1 the Python around the gate's four operations costs about as much as they do."""
        return 1.0 if self._folded_margin(block_input).item() > self._buffers["threshold"].item() else 0.0

    def _folded_margin(self, block_input: torch.Tensor) -> torch.Tensor:
        transposed, bias, direction, offset = derived(self, "margin", self._sources(), self._margin_tensors)
        same = block_input.dtype == transposed.dtype   # no operation where there is nothing to convert
        pooled_sum = (block_input if same else block_input.to(transposed.dtype)).sum(dim=(2, 3))
        hidden = torch.addmm(bias, pooled_sum, transposed, alpha=1 / (block_input.shape[2] * block_input.shape[3]))
        return torch.addmv(offset, hidden.relu_(), direction)

    def _sources(self) -> tuple[torch.Tensor, ...]:
        modules = self._modules   # not attribute access, which costs a microsecond a module
        fc2 = modules["fc2"]._parameters
        return folding_sources(modules["fc1"], modules["bn"]) + (fc2["weight"], fc2["bias"])

    def _margin_tensors(self) -> tuple[torch.Tensor, ...]:
        weight, bias = folded_linear_bn(self.fc1, self.bn)
        return (weight.t().contiguous(), bias, self.fc2.weight[RUN] - self.fc2.weight[SKIP],
                self.fc2.bias[RUN] - self.fc2.bias[SKIP])


class AIGGates(nn.Module):
    """The decider: one gate per non-downsampling block of ``backbone``."""

    kind = DeciderKind.PER_BLOCK   # called before each block with that block's input
    # a decision it returns as a number was read back from the device (one image on a CPU): the
    # backbone's ExecutionRecord counts it among the reads
    numbers_read_back = True

    def __init__(self, backbone: "CifarResNet", hidden: int = 16):
        super().__init__()
        self.num_blocks = backbone.num_blocks
        self.gated_blocks = [k for k in range(backbone.num_blocks)
                             if k not in backbone.downsampling_blocks]
        self.gates = nn.ModuleDict({str(k): Gate(backbone.blocks[k].conv1.in_channels, hidden)
                                    for k in self.gated_blocks})

    def gate_for(self, block_index: int) -> Gate | None:
        """Block ``block_index``'s gate; None for a downsampling block, which always runs."""
        # the ModuleDict's own dictionary: nn.Module attribute access costs a microsecond, before every block
        return self._modules["gates"]._modules.get(str(block_index))

    def forward(self, block_index: int, block_input: torch.Tensor) -> torch.Tensor | None:
        gate = self.gate_for(block_index)
        if gate is None:
            return None  # downsampling blocks always run
        if not self.training:
            if (len(block_input) == 1 and block_input.is_cpu and inferring(gate)
                    and not torch.is_autocast_enabled("cpu")):
                # One image on a CPU, where a read costs no wait: its decision as a number, which the
                # backbone runs without checking or planning a tensor
                return gate.one_image_decision(block_input)
            return (gate.margin(block_input) > gate.threshold).to(block_input.dtype)
        return F.gumbel_softmax(gate(block_input).float(), tau=1.0, hard=True)[:, RUN]

    def macs_and_params(self) -> tuple[int, int]:
        """Per-image MACs of all gates (their linear layers; pooling is not counted) and their
        parameter count."""
        macs = sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        return macs, sum(p.numel() for p in self.parameters())


def _threshold_for_rate(margin: torch.Tensor, rate: float) -> float:
    """The threshold for which ``margin > threshold`` passes the fraction of the values closest to
    ``rate``. Equal margins pass or fail together, so with ties the nearest fraction that can be
    had is chosen (50 zeros and 50 ones: 0.5 for a rate of 0.3, not 0); a rate of 1, -inf."""
    distinct, counts = torch.unique(margin.flatten(), sorted=True, return_counts=True)
    distinct, counts = distinct.flip(0), counts.flip(0)            # largest first
    # threshold distinct[j] passes the values above it; below the smallest value, every value
    passing = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    thresholds = torch.cat([distinct, distinct.new_full((1,), -float("inf"))])
    best = (passing.double() / len(margin.flatten()) - rate).abs().argmin()
    return thresholds[best].item()


@torch.no_grad()
def calibrate_thresholds(net: "DynamicNetwork", images: torch.Tensor, target: float,
                         device: torch.device | str | None = None) -> None:
    """Set every gate's test-time threshold so that it runs its block for a fraction ``target``
    of ``images`` (uint8, images the network did not train on), gate after gate in block order,
    each seeing the decisions of the gates before it (one forward pass over all the images)."""
    check_target_rate(target)
    gates = net.decider

    def calibrating(block_index: int, block_input: torch.Tensor) -> torch.Tensor | None:
        # the threshold from this gate's margins on the images, then its decisions
        gate = gates.gate_for(block_index)
        if gate is not None:
            gate.threshold.fill_(_threshold_for_rate(gate.margin(block_input), target))
        return gates(block_index, block_input)

    predict(net, images, batch_size=len(images), device=device,
            forward=lambda model, batch: model.backbone(batch, decisions=calibrating, mode=model.eval_mode))


def target_rate_loss(decisions: torch.Tensor, target: float, gated_blocks: list[int]) -> torch.Tensor:
    """L_target = (1/L) sum_l (z_l - t)^2 over the gated layers, with z_l the fraction of the
    mini-batch that executes layer l."""
    check_target_rate(target)
    rates = decisions[:, gated_blocks].mean(dim=0)
    return ((rates - target) ** 2).mean()
