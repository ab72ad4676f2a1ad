"""The network a recorder measures, and a per-record-step lazy cache of the passes it needs.

:class:`Network` is built once per recorder: the converted layers in forward order, their
per-sample input/output shapes, and a BP-converted structural copy that shares the live model's
Parameters (no extra memory) and is always run through ``torch.func.functional_call`` with the
live Parameters and *cloned* buffers.

:class:`StepContext` is built once per recorded step. Each pass is a cached property, computed at
most once and shared by every quantity that reads it:

* ``train_rule`` / ``train_bp``: loss, logits and the W-gradients on the training batch, in the
  model's own mode (BatchNorm on batch statistics, as in the training step), under the rule and
  under BP, at the same weights;
* ``probe_rule`` / ``probe_bp``: the error δ delivered to every layer output on the probe batch,
  in eval mode (and, from the rule's pass, every layer's output y);
* ``probe_bp_grads``: BP's gradient of every W on the probe batch, in eval mode;
* ``jacobians``: per-sample Jacobians of the logits w.r.t. every layer output on the probe batch,
  feedback (live model) and true (BP copy), from one ``torch.func.jacrev`` each;
* ``dfa_maps``: for DFA layers, the feedback map from e_out to the layer *input* and the
  probe-mean true Jacobian w.r.t. the layer input.

Nothing here perturbs training: gradients come from ``torch.autograd.grad`` / ``torch.func`` (no
``.grad`` is touched), buffers that a forward may update (BatchNorm running statistics, anything
outside the converted layers) are cloned, and each pass runs under ``torch.random.fork_rng`` so
the training RNG stream is unchanged; each pass therefore draws the *same* random numbers as the
training step that follows (same dropout masks, same brSF feedback draw).

Jacobians w.r.t. a layer's output are taken by adding a zero perturbation ε_l to that output
(a forward hook) and differentiating ``logits.sum(0)`` w.r.t. all ε at once: in eval mode sample n's
logits depend on ε_l[n] only, so the C vector-Jacobian products that ``jacrev`` vmaps give every
sample's Jacobian for every layer in one batched backward.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from alignment.convert import UnconvertedLayerWarning, convert
from alignment.layers.base import FeedbackLayer
from alignment.recording.quantities.common import Workspace
from alignment.recording.schema import MAX_FEATURES, MAX_RANK
from alignment.rules.bp import BP
from alignment.rules.dfa import DFA

LossFn = Callable[[Tensor, Tensor], Tensor]


@contextlib.contextmanager
def fork_rng(device: torch.device) -> Iterator[None]:
    """``torch.random.fork_rng`` on the CPU generator and, for an accelerator model, its device."""
    if device.type == "cpu":
        forked = torch.random.fork_rng(devices=[])
    else:
        forked = torch.random.fork_rng(devices=[device], device_type=device.type)
    with forked:
        yield


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode; each one's own mode is restored afterwards."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


@contextlib.contextmanager
def perturbed(
    layers: Mapping[str, nn.Module],
    outputs: Mapping[str, Tensor] | None = None,
    inputs: Mapping[str, Tensor] | None = None,
) -> Iterator[None]:
    """Add ``outputs[name]`` to the output and ``inputs[name]`` to the input of ``layers[name]``."""
    handles = []
    try:
        for name, eps in (outputs or {}).items():
            handles.append(layers[name].register_forward_hook(_add_to_output(eps)))
        for name, eps in (inputs or {}).items():
            handles.append(layers[name].register_forward_pre_hook(_add_to_input(eps)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def captured(layers: Mapping[str, nn.Module], outputs: dict[str, Tensor]) -> Iterator[None]:
    """Store the (detached) output of each of ``layers`` in ``outputs`` during the block."""
    handles = []

    def keep(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            outputs[name] = output.detach()

        return hook

    try:
        for name, layer in layers.items():
            handles.append(layer.register_forward_hook(keep(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _add_to_output(eps: Tensor) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return output + eps

    return hook


def _add_to_input(eps: Tensor) -> Callable:
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (args[0] + eps, *args[1:])

    return hook


class Network:
    """A converted model as the recorder sees it (built once per recorder)."""

    def __init__(
        self,
        model: nn.Module,
        x_probe: Tensor,
        *,
        max_features: int = MAX_FEATURES,
        max_rank: int = MAX_RANK,
    ) -> None:
        self.model = model
        self.max_features = max_features
        """Units per layer kept in ``activation``."""
        self.max_rank = max_rank
        """Singular values per layer kept in the spectra."""
        self.device = x_probe.device
        self.layers, self.in_shapes, self.out_shapes, self.num_outputs = _trace(model, x_probe)
        if not self.layers:
            raise ValueError(
                "the model has no converted layers (alignment.FeedbackLayer) that run in its "
                "forward; convert it first with alignment.convert(model, rule)"
            )
        owners = {name: m for name, m in model.named_modules()}
        self.mutable_buffers = [
            name
            for name, _ in model.named_buffers()
            if not isinstance(owners[name.rpartition(".")[0]], FeedbackLayer)
        ]
        self.bp = _bp_copy(model)
        bp_modules = dict(self.bp.named_modules())
        self.bp_layers = {name: bp_modules[name] for name in self.layers}
        self.bp_parameters = [name for name, _ in self.bp.named_parameters()]
        self.dfa = [name for name, layer in self.layers.items() if isinstance(layer.rule, DFA)]
        self.workspace = Workspace()
        self.cache: dict[str, object] = {}
        """Per-recorder values computed once (e.g. predictions that depend only on fixed B)."""
        self.all_bp = all(isinstance(layer.rule, BP) for layer in self.layers.values())
        """Every layer under BP: the BP passes are the rule's passes (computed once)."""

    @property
    def names(self) -> list[str]:
        return list(self.layers)

    def cloned_buffers(self, every: bool = False) -> dict[str, Tensor]:
        """Clones of the buffers a forward may update (``every``: of all buffers, as needed
        inside a torch.func transform, where a forward may not mutate a captured tensor)."""
        buffers = dict(self.model.named_buffers())
        names = buffers if every else self.mutable_buffers
        return {name: buffers[name].clone() for name in names}

    def bp_tensors(self) -> dict[str, Tensor]:
        """The live Parameters (under the BP copy's names) and cloned live buffers."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        tensors = {name: params[name] for name in self.bp_parameters}
        return tensors | self.cloned_buffers()

    def sync_modes(self) -> None:
        """Put every module of the BP copy in the mode of its live counterpart."""
        live = dict(self.model.named_modules())
        for name, module in self.bp.named_modules():
            if name in live:
                module.training = live[name].training

    def run(
        self,
        which: str,
        x: Tensor,
        outputs: Mapping[str, Tensor] | None = None,
        inputs: Mapping[str, Tensor] | None = None,
        tensors: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Logits of the live model (``which='rule'``) or the BP copy (``'bp'``), perturbed."""
        if which == "rule":
            module, layers = self.model, self.layers
            tensors = self.cloned_buffers() if tensors is None else tensors
        else:
            module, layers = self.bp, self.bp_layers
            tensors = self.bp_tensors() if tensors is None else tensors
        with perturbed(layers, outputs, inputs):
            logits = functional_call(module, dict(tensors), (x,))
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise TypeError(
                "the recorder needs the model to return one tensor of logits (batch × C); got "
                f"{type(logits).__name__}{tuple(getattr(logits, 'shape', ()))}"
            )
        return logits


@contextlib.contextmanager
def quiet_vmap_fallback():
    """Silence torch's note that an op (e.g. attention's fused backward) has no vmap batching rule
    and runs sample by sample: the Jacobians are still exact, only slower."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop because we have")
        yield


def _trace(
    model: nn.Module, x: Tensor
) -> tuple[dict[str, FeedbackLayer], dict[str, tuple], dict[str, tuple], int]:
    """Converted layers in forward order, their per-sample in/out shapes, the number of logits."""
    names = {id(m): name for name, m in model.named_modules() if isinstance(m, FeedbackLayer)}
    order: list[str] = []
    in_shapes: dict[str, tuple] = {}
    out_shapes: dict[str, tuple] = {}

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        name = names[id(module)]
        if name in in_shapes:
            raise ValueError(
                f"converted layer {name!r} runs more than once per forward; the recorder "
                "needs each converted layer to run once (one output per layer)"
            )
        order.append(name)
        in_shapes[name] = tuple(args[0].shape[1:])
        out_shapes[name] = tuple(output.shape[1:])

    modules = {name: m for name, m in model.named_modules() if isinstance(m, FeedbackLayer)}
    handles = [m.register_forward_hook(hook) for m in modules.values()]
    try:
        with torch.no_grad(), eval_mode(model), fork_rng(x.device):
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise TypeError(
            "the recorder needs the model to return one tensor of logits (batch × C); got "
            f"{type(logits).__name__}{tuple(getattr(logits, 'shape', ()))}"
        )
    return {name: modules[name] for name in order}, in_shapes, out_shapes, logits.shape[1]


def _bp_copy(model: nn.Module) -> nn.Module:
    """``convert(model, 'bp')`` sharing the live Parameters (so it costs no memory)."""
    with warnings.catch_warnings(), fork_rng(next(iter(model.parameters())).device):
        warnings.simplefilter("ignore", UnconvertedLayerWarning)
        bp = convert(model, "bp")
    live = dict(model.named_parameters(remove_duplicate=False))
    for name, _ in list(bp.named_parameters(remove_duplicate=False)):
        prefix, _, leaf = name.rpartition(".")
        owner = bp.get_submodule(prefix) if prefix else bp
        owner._parameters[leaf] = live[name]
    return bp


@dataclass
class TrainPass:
    loss: Tensor
    logits: Tensor
    grads: dict[str, Tensor | None]


@dataclass
class ProbePass:
    logits: Tensor
    e_out: Tensor
    deltas: dict[str, Tensor]
    outputs: dict[str, Tensor]
    """Each layer's output y on the probe batch (the rule's pass only; empty for BP's)."""


@dataclass
class Jacobians:
    """Per-sample Jacobians of the logits w.r.t. each layer output: N × C × (output shape)."""

    fb: dict[str, Tensor]
    true: dict[str, Tensor]


@dataclass
class DFAMaps:
    """Per DFA layer: the feedback map e_out → layer input (C × input shape, sample-independent)
    and the probe-mean true Jacobian of the logits w.r.t. the layer input (same shape)."""

    fb: dict[str, Tensor]
    true: dict[str, Tensor]


class StepContext:
    """Everything measured at one recorded step, computed lazily and at most once."""

    def __init__(
        self,
        net: Network,
        x: Tensor,
        y: Tensor,
        loss_fn: LossFn,
        probe: tuple[Tensor, Tensor],
        optimizer: torch.optim.Optimizer | None = None,
        residual_factor: float = math.nan,
        *,
        probe_record: bool = False,
    ) -> None:
        self.net = net
        self.x, self.y = x, y
        self.loss_fn = loss_fn
        self.x_probe, self.y_probe = probe
        self.optimizer = optimizer
        self.residual_factor = residual_factor
        self.probe_record = probe_record
        """A record of the probe (Jacobian) schedule: the probe quantities are computed too."""
        """c_t of the feedback residual at this step (:mod:`alignment.recording.decay`)."""

    # ---------------------------------------------------------------- training batch
    def _train_pass(self, which: str) -> TrainPass:
        net = self.net
        weights = [layer.weight for layer in net.layers.values()]
        wanted = [w for w in weights if w.requires_grad]
        with fork_rng(net.device), torch.enable_grad():
            if which == "bp":
                net.sync_modes()
            logits = net.run(which, self.x)
            loss = self.loss_fn(logits, self.y)
            grads = torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else ()
        found = iter(grads)
        per_layer = {
            name: (next(found) if w.requires_grad else None)
            for name, w in zip(net.layers, weights, strict=True)
        }
        return TrainPass(loss.detach(), logits.detach(), per_layer)

    @cached_property
    def train_rule(self) -> TrainPass:
        return self._train_pass("rule")

    @cached_property
    def train_bp(self) -> TrainPass:
        return self.train_rule if self.net.all_bp else self._train_pass("bp")

    # ---------------------------------------------------------------- probe batch
    def _zeros_out(self, n: int) -> dict[str, Tensor]:
        net, like = self.net, self.x_probe
        dtype = next(iter(net.layers.values())).weight.dtype
        return {
            name: torch.zeros((n, *shape), dtype=dtype, device=like.device)
            for name, shape in net.out_shapes.items()
        }

    def _probe_pass(self, which: str) -> ProbePass:
        net = self.net
        eps = self._zeros_out(self.x_probe.shape[0])
        outputs: dict[str, Tensor] = {}
        layers = net.layers if which == "rule" else {}
        with (
            fork_rng(net.device),
            torch.enable_grad(),
            eval_mode(net.model, net.bp),
            captured(layers, outputs),  # registered first: sees y before the zero perturbation
        ):
            for e in eps.values():
                e.requires_grad_()
            logits = net.run(which, self.x_probe, outputs=eps)
            loss = self.loss_fn(logits, self.y_probe)
            grads = torch.autograd.grad(loss, [logits, *eps.values()], allow_unused=True)
        deltas = {
            name: (g if g is not None else torch.zeros_like(e))
            for (name, e), g in zip(eps.items(), grads[1:], strict=True)
        }
        return ProbePass(logits.detach(), grads[0], deltas, outputs)

    @cached_property
    def probe_rule(self) -> ProbePass:
        return self._probe_pass("rule")

    @cached_property
    def probe_bp(self) -> ProbePass:
        return self.probe_rule if self.net.all_bp else self._probe_pass("bp")

    @cached_property
    def probe_bp_grads(self) -> dict[str, Tensor | None]:
        """BP's gradient of every W on the probe batch, in eval mode (None: W not trained)."""
        net = self.net
        weights = [layer.weight for layer in net.layers.values()]
        wanted = [w for w in weights if w.requires_grad]
        with fork_rng(net.device), torch.enable_grad(), eval_mode(net.model, net.bp):
            loss = self.loss_fn(net.run("bp", self.x_probe), self.y_probe)
            grads = torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else ()
        found = iter(grads)
        return {
            name: (next(found) if w.requires_grad else None)
            for name, w in zip(net.layers, weights, strict=True)
        }

    # ---------------------------------------------------------------- Jacobians
    def _transform_tensors(self, which: str) -> dict[str, Tensor]:
        """Tensors for a forward inside a torch.func transform: every buffer a fresh clone (a
        rule may redraw its feedback in place during the forward, e.g. brSF)."""
        return self.net.cloned_buffers(every=True) if which == "rule" else self.net.bp_tensors()

    def _output_jacobians(self, which: str) -> dict[str, Tensor]:
        net = self.net

        def logits_sum(eps: dict[str, Tensor]) -> Tensor:
            tensors = self._transform_tensors(which)
            return net.run(which, self.x_probe, outputs=eps, tensors=tensors).sum(0)

        with fork_rng(net.device), torch.enable_grad(), eval_mode(net.model, net.bp):
            with quiet_vmap_fallback():
                jac = jacrev(logits_sum)(self._zeros_out(self.x_probe.shape[0]))
        return {name: j.detach().transpose(0, 1) for name, j in jac.items()}

    @cached_property
    def jacobians(self) -> Jacobians:
        fb = self._output_jacobians("rule")
        return Jacobians(fb=fb, true=fb if self.net.all_bp else self._output_jacobians("bp"))

    def _input_jacobians(self, which: str, x: Tensor, names: list[str]) -> dict[str, Tensor]:
        """Sum over the samples of ``x`` of ∂logits[n]/∂(layer input)[n]: C × input shape."""
        net = self.net
        dtype = net.layers[names[0]].weight.dtype
        zeros = {
            name: torch.zeros((1, *net.in_shapes[name]), dtype=dtype, device=x.device)
            for name in names
        }

        def logits_sum(eps: dict[str, Tensor]) -> Tensor:
            tensors = self._transform_tensors(which)
            return net.run(which, x, inputs=eps, tensors=tensors).sum(0)

        with fork_rng(net.device), torch.enable_grad(), eval_mode(net.model, net.bp):
            with quiet_vmap_fallback():
                jac = jacrev(logits_sum)(zeros)
        return {name: j.detach()[:, 0] for name, j in jac.items()}

    @cached_property
    def dfa_maps(self) -> DFAMaps:
        names = self.net.dfa
        if not names:
            return DFAMaps({}, {})
        # DFA's injected error e_out·D does not depend on the sample: one probe sample suffices
        fb = self._input_jacobians("rule", self.x_probe[:1], names)
        n = self.x_probe.shape[0]
        true = {k: v / n for k, v in self._input_jacobians("bp", self.x_probe, names).items()}
        return DFAMaps(fb, true)

    # ---------------------------------------------------------------- feedback
    @cached_property
    def feedback_matrices(self) -> dict[str, Tensor]:
        return {name: layer.feedback_matrix() for name, layer in self.net.layers.items()}
