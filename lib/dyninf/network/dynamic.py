"""A backbone and its decider as one trainable module.

Deciders with state (a random decider's training flag, AIG's gates, a policy network) live inside
the same ``nn.Module`` as the backbone, so ``.train()``/``.eval()``, the optimizer, ``.to(device)``
and checkpoints cover both.
"""
from __future__ import annotations

import torch
from torch import nn

from dyninf.network import skipping
from dyninf.network.backbones import CifarResNet, check_mode
from dyninf.network.cost import network_cost
from dyninf.decisions import DeciderKind, decider_kind
from dyninf.network.inference import predict
from dyninf.network.precision import inference_dtype, logit_tolerance


class DynamicNetwork(nn.Module):
    """``backbone`` run with the decisions of ``decider``.

    ``train_mode`` and ``eval_mode`` name the execution mode used in each phase (``"masked"`` or
    ``"skipped"``); ``forward(images, mode=...)`` overrides it for one call. With
    ``return_decisions=True`` it also returns the decisions it took, with their gradient, for losses
    on them (AIG's target rate, GaterNet's sparsity; the training loop hands them to its hooks):
    (batch, num_blocks), or (batch, num_filter_gates) for a decider of kind ``FILTERS``. The
    decider's ``kind`` (``dyninf.decisions.DeciderKind``) says how it is called: before each block,
    or once with the images (BlockDrop's policy, GaterNet's gater).

    ``freeze_backbone()`` stops the backbone's training (no gradients, BatchNorm statistics kept,
    also in train mode) while the decider learns; ``freeze_backbone(False)`` undoes it.
    """

    def __init__(self, backbone: CifarResNet, decider: nn.Module, train_mode: str = "masked",
                 eval_mode: str = "skipped"):
        super().__init__()
        check_mode(train_mode)
        check_mode(eval_mode)
        self.backbone, self.decider, self.kind = backbone, decider, decider_kind(decider)
        check_decider_fits(decider, backbone)
        self.train_mode, self.eval_mode = train_mode, eval_mode
        self.backbone_frozen = False

    @property
    def num_blocks(self) -> int:
        return self.backbone.num_blocks

    @property
    def decides_once(self) -> bool:
        """Whether the decider is global: called once with the images before the backbone runs
        (GaterNet's gater, BlockDrop's policy), not before each block (AIG's gates)."""
        return self.kind.decides_once

    def freeze_backbone(self, frozen: bool = True) -> "DynamicNetwork":
        self.backbone_frozen = frozen
        self.backbone.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "DynamicNetwork":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor, mode: str | None = None, return_decisions: bool = False,
                return_record: bool = False):
        """Logits; with ``return_decisions`` also the decisions taken, with ``return_record`` also how
        the backbone ran (``skipping.ExecutionRecord``: reads back to the host, each block's way)."""
        logits, decisions, _, record = self._forward(images, mode)
        outputs = (logits,) + ((decisions,) if return_decisions else ()) + ((record,) if return_record else ())
        return outputs[0] if len(outputs) == 1 else outputs

    def forward_with_probabilities(self, images: torch.Tensor, mode: str | None = None) -> tuple:
        """(logits, decisions, probabilities): the pass and what a training step's losses need,
        the decisions with their gradient and, for a policy that draws its decisions from
        keep-probabilities (kind ``BLOCKS``: BlockDrop), those probabilities with their gradient
        (None for the other kinds)."""
        return self._forward(images, mode)[:3]

    def _forward(self, images: torch.Tensor, mode: str | None) -> tuple:
        mode = mode or (self.train_mode if self.training else self.eval_mode)
        probabilities = None
        # a decider that looks at the images through a CifarResNet (the gater, the policy) has, in
        # eval mode, checked them as the backbone would: not again
        checked = not self.training and isinstance(getattr(self.decider, "extractor", None), CifarResNet)
        if self.kind is DeciderKind.FILTERS:   # a global gater (GaterNet)
            decisions = self.decider(images)
            logits, record = self.backbone(images, mode=mode, filter_gates=decisions, return_record=True,
                                           images_checked=checked)
        elif self.kind is DeciderKind.BLOCKS:   # a global policy (BlockDrop)
            decisions, probabilities = self.decider(images)
            logits, record = self.backbone(images, decisions=decisions, mode=mode, return_record=True,
                                           images_checked=checked)
        else:
            logits, decisions, record = self.backbone(images, decisions=self.decider, mode=mode,
                                                      return_decisions=True, return_record=True)
        return logits, decisions, probabilities, record


def check_decider_fits(decider: nn.Module, backbone: CifarResNet) -> None:
    """A decider built for another network (another depth or width) is refused here, by name,
    instead of failing with an index or shape error inside the first forward pass."""
    sizes = {"num_blocks": ("blocks", backbone.num_blocks), "num_gates": ("gated filters", backbone.num_filter_gates)}
    for attribute, (what, expected) in sizes.items():
        found = getattr(decider, attribute, None)
        if found is not None and found != expected:
            raise ValueError(f"the decider {type(decider).__name__} was built for a network with {found} {what}; "
                             f"this backbone has {expected}: build it for this backbone")
    gate_for = getattr(decider, "gate_for", None)   # a gate per block (AIG): each sized for its block's input
    for index, block in enumerate(backbone.blocks) if gate_for else ():
        gate = gate_for(index)
        if gate is not None and gate.fc1.in_features != block.conv1.in_channels:
            raise ValueError(f"the decider {type(decider).__name__}'s gate for block {index} takes {gate.fc1.in_features} "
                             f"channels; this backbone's block {index} has {block.conv1.in_channels}: build "
                             f"the gates for this backbone")


def spent_macs(net: DynamicNetwork, decisions: torch.Tensor, executed: bool = False) -> torch.Tensor:
    """MACs each image spends (batch,) given the decisions ``net`` took for it: the backbone's
    blocks or filters that ran, plus the decider's own cost (``decider.macs_and_params()``).
    ``executed``: filters as skipped mode computes them for one image on a CPU (the open ones
    rounded up to a multiple of ``FILTER_BLOCK``), not exactly the open ones (the ideal); blocks
    are counted the same either way."""
    cost = network_cost(net.backbone)
    if net.kind is DeciderKind.FILTERS:
        backbone = cost.spent_macs(filter_gates=decisions, filter_block=skipping.FILTER_BLOCK if executed else None)
    else:
        backbone = cost.spent_macs(decisions)
    return backbone + net.decider.macs_and_params()[0]


def predict_with_decisions(net: DynamicNetwork, images: torch.Tensor,
                           **predict_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode logits and the (N, num_blocks) decisions taken for uint8 ``images``."""
    taken = []

    def forward(model, batch, **kwargs):
        logits, decisions = model(batch, return_decisions=True, **kwargs)
        taken.append(decisions.float().cpu())
        return logits

    logits = predict(net, images, forward=forward, **predict_kwargs)
    return logits, torch.cat(taken)


def mode_agreement(net: nn.Module, images: torch.Tensor, *, decisions: torch.Tensor | None = None,
                   device: torch.device | str | None = None, batch_size: int = 500) -> dict:
    """Masked against skipped mode on uint8 ``images``, on ``device`` in the course's precision
    there (bf16 on CUDA): the network decides in skipped mode, then its backbone runs in masked
    mode with those same decisions (a local gate could otherwise decide differently on a block
    input that differs by rounding). ``net``: a ``DynamicNetwork``, or a backbone with fixed
    ``decisions`` (N, num_blocks).

    Returns the largest logit difference beside the ``tolerance`` rounding explains in that
    ``precision`` (``agree``: within it), the share of equal predictions, and the share of images
    whose decisions are the same when masked mode decides by itself."""
    device = torch.device(device) if device else next(net.parameters()).device
    given = {} if decisions is None else {"decisions": decisions}
    skipped, taken = predict_with_decisions(net, images, device=device, batch_size=batch_size,
                                            mode="skipped", **given)
    masked, masked_taken = predict_with_decisions(net, images, device=device, batch_size=batch_size,
                                                  mode="masked", **given)
    if not torch.equal(masked_taken, taken):   # a local gate tipped: rerun masked with skipped's decisions
        dynamic = isinstance(net, DynamicNetwork)
        backbone = net.backbone if dynamic else net
        same = {"filter_gates" if dynamic and net.kind is DeciderKind.FILTERS else "decisions": taken}
        masked = predict(backbone, images, device=device, batch_size=batch_size, mode="masked", **same)
    difference = (masked - skipped).abs().max().item()
    dtype = inference_dtype(device)
    tolerance = logit_tolerance(dtype, masked)
    return {"max |masked - skipped|": difference, "tolerance": tolerance, "agree": difference <= tolerance,
            "precision": str(dtype).removeprefix("torch."),
            "same predictions": (masked.argmax(1) == skipped.argmax(1)).float().mean().item(),
            "same decisions when each mode decides": (masked_taken == taken).all(1).float().mean().item()}
