"""He et al.'s CIFAR ResNets with gateable residual blocks and two execution modes.

Every block computes ``relu(shortcut(x) + residual(x))``. Given per-image decisions ``run``
(1 = run, 0 = skip; any other value runs the block with its residual scaled by that value, as
stochastic depth's 1/p does) a block computes ``relu(shortcut(x) + run * residual(x))``, either

* ``mode="masked"``: for the whole batch; differentiable in ``run``, for training; skipped images
  still cost their full compute; or
* ``mode="skipped"``: skipped work is not computed: a block that no image runs costs nothing,
  and the residual branch runs only on the images whose decision is not 0 (gathered, then
  scattered back) where that is cheaper than running the whole batch. ``dyninf.network.skipping`` holds
  that machinery and plans every block before the first runs, so that on a GPU the host reads the
  decisions back once per batch, not once per block.

Both give the same outputs in eval mode: block inputs come out of a ReLU and the shortcut only
subsamples and zero-pads, so ``shortcut(x) >= 0`` and ``relu(shortcut(x)) == shortcut(x)``.

Filter gates (GaterNet) act inside the residual branch: per image, a gate on every inner filter
(the outputs of a basic block's first convolution, of a bottleneck block's first two; the block's
output width is unchanged). Masked mode multiplies those feature maps by the gates. Skipped mode,
in eval and where the device's skipping policy says it pays (on a CPU, not on a GPU), computes
only the filters open for some image that runs the block (at batch 1: that image's), by slicing
each convolution's gated outputs and inputs, and masks the rest; in training it falls back to
masking (the gates' gradient needs every filter).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dyninf.decisions import BlockDecider, as_decider
from dyninf.network.folding import inferring
from dyninf.network.skipping import (MASKED, BlockRun, ExecutionRecord, SkippingPolicy, gather, plan_block,
                                     plan_execution, policy_for, scaled_residual, scatter_, sliced_conv_bn,
                                     uniform_block_run)

MODES = ("masked", "skipped")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class ResidualBlock(nn.Module):
    """A residual block that can be skipped per image, with an option-A shortcut; subclasses define
    the residual branch and which of its filters can be gated."""

    # the residual branch's layers in order: (convolution, the batch norm after it, gate group on
    # the convolution's inputs, gate group on its outputs), by attribute name; None = ungated
    conv_bn_pairs: tuple[tuple[str, str, int | None, int | None], ...]

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.downsamples = stride != 1 or in_channels != out_channels

    def filter_groups(self) -> tuple[int, ...]:
        """Sizes of the groups of filter gates, in the order of the gate vector."""
        raise NotImplementedError

    @property
    def gated_filters(self) -> int:
        """How many filter gates the residual branch takes."""
        return sum(self.filter_groups())

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """He et al.'s option A: subsample and zero-pad channels (parameter-free, so a skipped
        downsampling block still yields a valid output)."""
        if not self.downsamples:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def residual(self, x: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
        """The residual branch for the whole batch, its inner filters multiplied by ``filters``
        (masked; ``dyninf.network.skipping`` computes only the open ones)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, run: torch.Tensor | None = None, mode: str = "masked",
                filters: torch.Tensor | None = None, *, overwrite_input: bool = False,
                step: BlockRun | None = None) -> torch.Tensor:
        """``run``: (batch,) block decisions; ``filters``: (batch, gated_filters) filter gates.
        Skipped mode runs the way ``step`` says (the network plans every block before the first
        runs; a block called on its own plans itself). ``overwrite_input``: skipped mode may write
        its output into ``x`` when no gradient is recorded (the network passes it for its own
        intermediate tensors, saving a copy)."""
        if mode == "masked" or (run is None and filters is None):
            residual = self.computed_residual(x, filters)
            if run is not None:
                residual = run.to(x.dtype).view(-1, 1, 1, 1) * residual
            return rectified_sum(self.shortcut(x), residual)
        if step is None:
            step = plan_block(run, filters, self.filter_groups(), len(x), policy_for(x.device))[0]
        return self.run_skipped(x, run, filters, step, overwrite_input)

    def run_skipped(self, x: torch.Tensor, run: torch.Tensor | None, filters: torch.Tensor | None,
                    step: BlockRun, overwrite_input: bool = False) -> torch.Tensor:
        """``relu(shortcut(x) + run * residual(x))`` computed the way ``step`` says: the shortcut
        alone, the whole batch, or the running images gathered, run and scattered back."""
        shortcut = self.shortcut(x)
        if step.how == "skip":
            return shortcut
        if step.how == "all":
            return rectified_sum(shortcut, scaled_residual(self.computed_residual(x, filters, step), run, step.scaled))
        images = step.images
        if filters is not None:
            filters = filters.index_select(0, images)
        residual = self.computed_residual(gather(x, images), filters, step)
        executed = rectified_sum(gather(shortcut, images), scaled_residual(residual, run.index_select(0, images), step.scaled))
        # Scatter back in place where that is safe: without autograd, into a shortcut that is a
        # new tensor (downsampling) or into an input the caller lets us overwrite.
        if torch.is_grad_enabled() or (shortcut is x and not overwrite_input):
            shortcut = shortcut.clone(memory_format=torch.preserve_format)
        return scatter_(shortcut, images, executed)

    def computed_residual(self, x: torch.Tensor, filters: torch.Tensor | None = None,
                          step: BlockRun | None = None) -> torch.Tensor:
        """The residual branch as this call needs it. In training or with autograd: the layers as
        written (``residual``; the gates' gradient needs every filter). For inference: each
        convolution of ``conv_bn_pairs`` with its batch norm folded in (``sliced_conv_bn``: one
        operation where there were two, which at batch 1 on a CPU saves a sixth of a convolution's
        time), cut to the filters ``step`` keeps (None: all), and the gates applied only where
        ``step`` says some of them are not 1."""
        if not inferring(self):
            return self.residual(x, filters)
        kept = step.filters if step is not None and step.filters is not None else None
        gated = step.gated if step is not None and step.gated is not None else None
        gates = None
        if filters is not None and (gated is None or any(gated)):
            gates = filters.split(self.filter_groups(), dim=1)
        hidden, last = x, len(self.conv_bn_pairs) - 1
        for position, (conv, bn, into, out) in enumerate(self.conv_bn_pairs):
            hidden = sliced_conv_bn(hidden, self._modules[conv], self._modules[bn],   # not getattr: a microsecond each
                                    inputs=None if into is None or kept is None else kept[into],
                                    outputs=None if out is None or kept is None else kept[out])
            if position < last:
                hidden = hidden.relu_()
                if gates is not None and out is not None and (gated is None or gated[out]):
                    opened = gates[out] if kept is None or kept[out] is None else gates[out].index_select(1, kept[out])
                    hidden = hidden.mul_(opened.to(hidden.dtype)[:, :, None, None])
        return hidden


def rectified_sum(shortcut: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``relu(shortcut + residual)``: a block's output once its residual is scaled; without autograd
    computed in place in ``residual`` (a tensor the block made), saving two new tensors a block."""
    if torch.is_grad_enabled():
        return F.relu(shortcut + residual)
    return residual.add_(shortcut).relu_()


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions and the option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(in_channels, out_channels, stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    # Filter gates: the first convolution's outputs, which are the second's inputs.
    conv_bn_pairs = (("conv1", "bn1", None, 0), ("conv2", "bn2", 0, None))

    def filter_groups(self) -> tuple[int, ...]:
        return (self.conv1.out_channels,)

    def residual(self, x: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
        hidden = F.relu(self.bn1(self.conv1(x)))
        if filters is not None:
            hidden = hidden * filters.to(x.dtype)[:, :, None, None]
        return self.bn2(self.conv2(hidden))


class BottleneckBlock(ResidualBlock):
    """1x1 (reduce to ``width``) -> 3x3 (stride) -> 1x1 (expand to 4 x ``width``), for the deep CIFAR
    ResNets of depth 9n + 2 (ResNet-164); option-A shortcut like the basic block (He et al. use
    projections here, which add parameters and break skipped mode's shortcut >= 0). Filter gates:
    the outputs of the two inner convolutions (``width`` each)."""

    expansion = 4
    conv_bn_pairs = (("conv1", "bn1", None, 0), ("conv2", "bn2", 0, 1), ("conv3", "bn3", 1, None))

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        out_channels = self.expansion * width
        super().__init__(in_channels, out_channels, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def filter_groups(self) -> tuple[int, ...]:
        return (self.conv1.out_channels, self.conv2.out_channels)

    def residual(self, x: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
        if filters is None:
            hidden = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            return self.bn3(self.conv3(hidden))
        first, second = (gates.to(x.dtype)[:, :, None, None] for gates in filters.split(self.filter_groups(), dim=1))
        hidden = F.relu(self.bn1(self.conv1(x))) * first
        hidden = F.relu(self.bn2(self.conv2(hidden))) * second
        return self.bn3(self.conv3(hidden))


class Stem(nn.Sequential):
    """The 3x3 convolution, batch norm and ReLU that start the network; for inference (eval mode,
    no autograd) the batch norm folded into the convolution, as in the blocks."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not inferring(self):
            return super().forward(images)
        return sliced_conv_bn(images, self[0], self[1]).relu_()


class Head(nn.Sequential):
    """Global average pooling, flattening, then the classifier (or whatever replaces it: a gater's
    extractor has none); for inference the pooling and the flattening in one operation."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        layers = list(self._modules.values())
        if not inferring(self) or len(layers) < 2 or not isinstance(layers[0], nn.AdaptiveAvgPool2d):
            return super().forward(hidden)
        pooled = hidden.mean(dim=(2, 3))
        for layer in layers[2:]:
            pooled = layer(pooled)
        return pooled


class CifarResNet(nn.Module):
    """Stem (3x3 conv, BN, ReLU) -> residual blocks in three stages -> global pool -> linear.

    ``forward(images, decisions=None, mode="masked")``: ``decisions`` is None (plain ResNet), a
    (batch, num_blocks) tensor (1 = run, 0 = skip) or a decider called before each block as
    ``decider(block_index, block_input)`` returning a (batch,) tensor, a number for every image
    (``dyninf.decisions``), or None for "all run".
    ``filter_gates``: None or (batch, num_filter_gates) gates on the residual branches' inner
    filters, block after block (``filter_gate_slices`` says which columns each block takes).
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, width: int = 16,
                 bottleneck: bool = False):
        super().__init__()
        self.depth = (9 if bottleneck else 6) * blocks_per_stage + 2
        self.stem = Stem(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, channels = [], width
        for stage in range(3):
            out_channels = width * 2 ** stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                if bottleneck:
                    blocks.append(BottleneckBlock(channels, out_channels, stride))
                    channels = BottleneckBlock.expansion * out_channels
                else:
                    blocks.append(BasicBlock(channels, out_channels, stride))
                    channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.stage_of_block = [k // blocks_per_stage for k in range(len(blocks))]
        offsets = [0]
        for block in blocks:
            offsets.append(offsets[-1] + block.gated_filters)
        self.filter_gate_slices = [slice(a, b) for a, b in zip(offsets, offsets[1:])]
        self.head = Head(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, num_classes))
        # how skipped mode chooses the way each block runs (None: the policy measured for the
        # images' device, dyninf.network.skipping.POLICIES)
        self.skipping_policy: SkippingPolicy | None = None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_filter_gates(self) -> int:
        """c: how many filter gates a GaterNet emits for this network."""
        return self.filter_gate_slices[-1].stop

    @property
    def downsampling_blocks(self) -> list[int]:
        """Indices of the blocks that change resolution or width (first of stages 2 and 3)."""
        return [k for k, block in enumerate(self.blocks) if block.downsamples]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The plain network's pooled features (batch, channels), before the classifier: what a
        gater or a policy network built from a ResNet looks at."""
        return self.head[:-1](self._run_blocks(images, None, "masked", None)[0])

    def forward(self, images: torch.Tensor,
                decisions: torch.Tensor | BlockDecider | None = None,
                mode: str = "masked", return_decisions: bool = False,
                filter_gates: torch.Tensor | None = None, return_record: bool = False, *,
                images_checked: bool = False):
        """Logits (batch, num_classes); with ``return_decisions`` also the (batch, num_blocks)
        decisions taken (all ones for a plain forward pass); with ``return_record`` also how the
        pass ran (``skipping.ExecutionRecord``: reads back to the host, each block's way).
        ``images_checked``: the caller has checked these images as ``check_images`` does (a
        dynamic network whose decider looked at them first), so they are not checked again."""
        hidden, taken, record = self._run_blocks(images, decisions, mode, filter_gates, images_checked)
        outputs = [self.head(hidden)]
        if return_decisions:
            if isinstance(taken, torch.Tensor):   # given as a tensor: those, as a new tensor
                outputs.append(taken.to(torch.float32, copy=True))
            else:
                ones = torch.ones(len(images), device=images.device)
                outputs.append(torch.stack([ones if run is None else run.to(ones.dtype) for run in taken], 1))
        if return_record:
            outputs.append(record)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _run_blocks(self, images, decisions, mode, filter_gates, images_checked=False):
        """The last block's output, the decisions taken (a (batch, num_blocks) tensor when they were
        given as one, else each block's, None where every image ran it) and the
        ``ExecutionRecord`` of the pass: the inputs checked, the blocks planned where every
        decision is known before the first, then run one after the other."""
        decider, policy = self._check_inputs(images, decisions, mode, filter_gates, images_checked)
        given = decisions if isinstance(decisions, torch.Tensor) else None
        if mode == "skipped" and (given is not None or decider is None and filter_gates is not None):
            # every decision known before the first block: one plan, one read back to the host
            plan, read = self._plan(images, given, filter_gates, policy)
            hidden = self._run_plan(images, given, filter_gates, plan)
            return hidden, given, ExecutionRecord(int(read), tuple(step.how for step in plan))
        hidden, taken, record = self._loop(images, decider, mode, filter_gates, policy)
        return hidden, taken if given is None else given, record

    def _run_plan(self, images, decisions, filter_gates, plan):
        """Each block the way ``plan`` says, with nothing decided or checked per block: a block
        that is skipped, or run unscaled on the whole batch, needs neither its decisions nor
        (when every gate it computes is 1) its filter gates."""
        hidden = self.stem(images)
        for index, (block, step) in enumerate(zip(self.blocks, plan)):
            if step.how == "skip":
                hidden = block.shortcut(hidden)
                continue
            run = decisions[:, index] if decisions is not None and (step.scaled or step.how == "gather") else None
            filters = None
            if filter_gates is not None and (step.gated is None or any(step.gated)):
                filters = filter_gates[:, self.filter_gate_slices[index]]
            hidden = block.run_skipped(hidden, run, filters, step, overwrite_input=True)   # our own intermediate
        return hidden

    def _check_inputs(self, images, decisions, mode, filter_gates,
                      images_checked=False) -> tuple[BlockDecider | None, SkippingPolicy]:
        """The decider the decisions stand for and the skipping policy, once the images (unless
        ``images_checked``), the mode, the decisions and the filter gates are checked."""
        if not images_checked:
            check_images(images, self.stem[0].weight.dtype, finite=not self.training)
        check_mode(mode)
        batch = len(images)
        decider = as_decider(decisions, batch, self.num_blocks)
        policy = self.skipping_policy or policy_for(images.device)
        # Skipped mode checks finiteness in its plan, which reads the values back once anyway;
        # filter gates the policy does not slice are not read back, so they are checked here.
        if isinstance(decisions, torch.Tensor):
            check_decision_values(decisions, images, "the decisions", mode == "masked")
            if mode == "skipped":
                check_skipped_can_compute(decisions, self.training, "the decisions")
        if filter_gates is not None:
            check_filter_gates(filter_gates, batch, self.num_filter_gates)
            check_decision_values(filter_gates, images, "the filter gates", mode == "masked" or not policy.slice_filters)
        return decider, policy

    def _loop(self, images, decider, mode, filter_gates, policy):
        """Each block in turn, its decisions taken on its input (a local decider, or none in masked
        mode) and, in skipped mode, the block planned on them alone."""
        batch, reads = len(images), 0
        numbers_read = int(getattr(decider, "numbers_read_back", False))   # a decision as a number: one read
        hidden = self.stem(images)
        taken, ways = [], []
        for index, block in enumerate(self.blocks):
            run = uniform = None
            if decider is not None:
                run = decider(index, hidden)
                if isinstance(run, (int, float)):   # the same for every image, known on the host
                    uniform, reads = float(run), reads + numbers_read
                    run = None if uniform == 1 else torch.full((batch,), uniform, device=images.device)
                elif run is not None:
                    check_block_decisions(run, batch, index, images.device)
                    if mode == "skipped":
                        check_skipped_can_compute(run, self.training, f"the decisions for block {index}")
            filters = None if filter_gates is None else filter_gates[:, self.filter_gate_slices[index]]
            step = None
            if mode == "skipped" and uniform is not None and filters is None:
                step = uniform_block_run(uniform)
            elif mode == "skipped" and (run is not None or filters is not None):
                # a local decider (AIG's gates) decides on this block's input: plan this block alone
                step, read = plan_block(run, filters, block.filter_groups(), batch, policy)
                reads += read
            if step is None:
                hidden = block(hidden, run, mode, filters)
            else:   # planned: straight to the way it runs (a module call costs microseconds a block)
                hidden = block.run_skipped(hidden, run, filters, step, overwrite_input=True)   # our own intermediate
            taken.append(run)
            ways.append("all" if step is None else step.how)
        return hidden, taken, ExecutionRecord(reads, tuple(ways))

    def _filter_groups(self) -> list[tuple[int, ...]]:
        # the architecture's, fixed: worked out once (asking nine blocks costs ten microseconds a pass)
        groups = self.__dict__.get("_gate_groups")
        if groups is None:
            groups = self.__dict__["_gate_groups"] = [block.filter_groups() for block in self.blocks]
        return groups

    def execution_plan(self, images: torch.Tensor, decisions: torch.Tensor | None = None,
                       filter_gates: torch.Tensor | None = None) -> list[BlockRun]:
        """How skipped mode would run each block for these decisions and gates (``BlockRun.how``:
        skip, all or gather): what the benchmark reports, and what the tests check."""
        return self._plan(images, decisions, filter_gates, self.skipping_policy or policy_for(images.device))[0]

    def _plan(self, images, decisions, filter_gates, policy) -> tuple[list[BlockRun], bool]:
        """The plan, and whether making it read anything back to the host."""
        gates = filter_gates if policy.slice_filters else None
        if decisions is None and gates is None:   # filter gates the policy does not slice: masked
            return [MASKED] * self.num_blocks, False
        return plan_execution(decisions, gates, self._filter_groups(), len(images), policy), True


def check_images(images: torch.Tensor, dtype: torch.dtype | None = None, finite: bool = False) -> None:
    """Images as the networks take them: (batch, 3, height, width), normalised floats in the
    network's ``dtype``; with ``finite``, finite where that costs no wait: on the CPU (on a GPU
    the host would wait for every forward pass; ``predict`` checks the logits it reads back, and
    training checks its loss once per epoch)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected normalised float images of shape (batch, 3, height, width), "
                         f"got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"expected normalised float images, got {str(images.dtype).removeprefix('torch.')} "
                         f"images of shape {tuple(images.shape)}: uint8 images go through "
                         f"dyninf.data.batches.model_inputs (or dyninf.network.inference.predict) first")
    if dtype is not None and images.dtype != dtype and not torch.is_autocast_enabled(images.device.type):
        name = lambda d: str(d).removeprefix("torch.")   # noqa: E731
        raise ValueError(f"the images are {name(images.dtype)}, the network's weights {name(dtype)}: "
                         f"convert one to the other (images.to({dtype}) or model.to({images.dtype}))")
    # the sum is finite when every value is (one reduction: at batch 1 a third of the element-wise
    # test's time); where it is not, the element-wise test decides (large values can overflow it)
    if finite and images.device.type == "cpu" and not math.isfinite(images.sum().item()):
        bad = (~torch.isfinite(images)).flatten(1).any(1)
        if bool(bad.any()):
            raise ValueError(f"{int(bad.sum())} of the {len(images)} images hold NaN or inf (the first: image "
                             f"{int(bad.nonzero()[0])}): their logits would be NaN")


def check_block_decisions(run: torch.Tensor, batch: int, index: int,
                          device: torch.device | None = None) -> None:
    if not isinstance(run, torch.Tensor) or tuple(run.shape) != (batch,):
        shape = tuple(run.shape) if isinstance(run, torch.Tensor) else type(run).__name__
        raise ValueError(f"the decisions for block {index} must have shape (batch,) = ({batch},), "
                         f"got {shape}")
    if device is not None and run.device != device:
        raise ValueError(f"the decisions for block {index} are on {run.device}, the images on "
                         f"{device}: a decider must decide on the images' device")


def check_decision_values(values: torch.Tensor, images: torch.Tensor, what: str,
                          finite: bool = True) -> None:
    """Decisions or filter gates given with the images: on the images' device (every mode alike,
    instead of a crash deep inside one of them) and, with ``finite``, finite (NaN would silently
    poison every logit; reading that back waits for the GPU). Checked once per forward pass, except
    for values that carry a gradient: a decider's own output while it trains (GaterNet's gates),
    where a NaN shows in the loss, which training checks once per epoch instead of per step."""
    if values.device != images.device:
        raise ValueError(f"{what} are on {values.device}, the images on {images.device}: "
                         f"move them with .to({str(images.device)!r})")
    if finite and not values.requires_grad and not bool(torch.isfinite(values).all()):
        raise ValueError(f"{what} must be finite (1 = run, 0 = skip, another value scales the "
                         f"residual), got NaN or inf")


def check_skipped_can_compute(run: torch.Tensor, training: bool, what: str) -> None:
    """Skipped mode gives masked mode's numbers only for inference: refused, with the reason, are
    per-image decisions that carry a gradient (a skipped image's residual is not computed, so its
    decision would get a zero gradient; masked mode's is the residual times the upstream one) and
    per-image decisions in train mode (batch norm would normalise only the images that run a block,
    and update its running statistics from them). Numbers that hold for the whole batch (stochastic
    depth's batch mode) are fine in training: a block runs for all images or for none."""
    if run.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{what} carry a gradient, which skipped mode cannot give them (a skipped image's "
                         f"residual is not computed): train in masked mode (mode='masked', a "
                         f"DynamicNetwork's train_mode='masked')")
    if training:
        raise ValueError(f"skipped mode got {what} per image while the network is in train mode: its batch "
                         f"norms would see only the images that run each block, not the whole batch as in "
                         f"masked mode. Train in masked mode (mode='masked'), or call .eval() to infer in "
                         f"skipped mode")


def check_filter_gates(gates: torch.Tensor, batch: int, count: int) -> None:
    if not isinstance(gates, torch.Tensor) or tuple(gates.shape) != (batch, count):
        shape = tuple(gates.shape) if isinstance(gates, torch.Tensor) else type(gates).__name__
        raise ValueError(f"filter gates must have shape (batch, num_filter_gates) = ({batch}, "
                         f"{count}), one per gated filter of the network, got {shape}")


def cifar_resnet(depth: int, num_classes: int = 10, width: int = 16,
                 bottleneck: bool = False) -> CifarResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 layers (8, 14, 20, 32, 44, 56, 110, ...), or
    with ``bottleneck`` blocks of depth 9n + 2 (164 for n = 18)."""
    per_block = 9 if bottleneck else 6
    if not isinstance(depth, int) or depth < per_block + 2 or (depth - 2) % per_block:
        examples = "11, 20, 29, 56, 164, ..." if bottleneck else "8, 14, 20, 32, 44, 56, 110, ..."
        raise ValueError(f"a CIFAR ResNet's depth must be {per_block}n + 2 with n >= 1 "
                         f"({examples}), got {depth!r}")
    return CifarResNet((depth - 2) // per_block, num_classes, width, bottleneck)
