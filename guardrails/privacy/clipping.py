"""Per-sample gradient clipping for a set of torch modules in one backward pass (ghost norms where exact).

Why not opacus' ``GradSampleModule`` + ``DPOptimizer`` as is: they wrap one
module and one optimizer, and materialise every per-sample gradient
(batch x parameters) before clipping. Generators here privatise several
modules with several optimizers (a GAN's discriminator, a VAE), and their
layers are mostly ``nn.Linear``, for which the per-sample gradient norm and
the clipped sum need no materialisation at all:

* per-sample norm (one row): ``||g_i a_i^T||_F = ||g_i|| ||a_i||``; with R
  rows per sample (sequences, several calls) ``sum((A_i A_i^T) * (G_i G_i^T))``
  — the "ghost norm" of Goodfellow (2015) / Li et al. (2022), which opacus also
  implements for its ``ghost`` mode;
* clipped sum: ``sum_i c_i g_i a_i^T = (c * G)^T A``, one matmul — the same
  cost as the ordinary weight gradient, which autograd is told not to compute
  (the weight's ``requires_grad`` is switched off during the step).

Every other parametrised layer type uses opacus' own registered per-sample
gradient rule (``GradSampleModule.GRAD_SAMPLERS``) or its functorch rule, so
the per-layer mathematics stays opacus'. Noise addition and accounting are done
by the caller (:mod:`guardrails.privacy.trainer`).
"""
from __future__ import annotations

from typing import Any

from genguard.guardrails.privacy.errors import PrivacyError

GRAD_SAMPLE_MODES = ("ghost", "hooks", "functorch")


def _grad_samplers() -> dict:
    from opacus.grad_sample import GradSampleModule

    return GradSampleModule.GRAD_SAMPLERS


def parametrised_layers(modules: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(qualified name, layer)`` of every submodule that owns trainable parameters directly."""
    out = []
    for mname, module in modules.items():
        for sub, layer in module.named_modules():
            if any(p.requires_grad for p in layer.parameters(recurse=False)):
                out.append((f"{mname}.{sub}" if sub else mname, layer))
    return out


class _Layer:
    """Captured inputs and output gradients of one layer over the calls of one physical batch."""

    __slots__ = ("name", "layer", "rule", "params", "acts", "grads", "handle", "frozen")

    def __init__(self, name: str, layer: Any, rule: str) -> None:
        self.name, self.layer, self.rule = name, layer, rule
        self.params = [p for p in layer.parameters(recurse=False) if p.requires_grad]
        self.acts: list[list[Any]] = []
        self.grads: list[Any] = []
        self.handle = None
        self.frozen: list[Any] = []


class PerSampleClipper:
    """Accumulate ``sum_i clip(g_i, C)`` over physical batches for the parameters of ``modules``.

    Use: ``attach()``; per physical batch ``loss = batch_loss(chunk); backward_and_clip(loss, len(chunk))``;
    after the logical batch ``clipped_sum()``; ``detach()`` at the end. ``mode`` picks how per-sample norms are
    computed: ``ghost`` (Linear by ghost norm, other layers by opacus' rules), ``hooks`` (opacus' rules for all,
    materialised), ``functorch`` (opacus' functorch rule for all).
    """

    def __init__(self, modules: dict[str, Any], max_grad_norm: float, mode: str = "ghost") -> None:
        import torch
        from torch import nn

        if mode not in GRAD_SAMPLE_MODES:
            raise PrivacyError(f"unknown grad_sample_mode {mode!r}; choose one of {', '.join(GRAD_SAMPLE_MODES)} or 'auto'")
        self.max_grad_norm = float(max_grad_norm)
        self.mode = mode
        samplers = _grad_samplers()
        self.layers: list[_Layer] = []
        for name, layer in parametrised_layers(modules):
            if mode == "ghost" and type(layer) is nn.Linear and layer.weight.requires_grad:
                rule = "linear"
            elif mode != "functorch" and type(layer) in samplers:
                rule = "opacus"
            elif not any(True for _ in layer.children()) and not list(layer.buffers()):
                rule = "functorch"
            else:
                raise PrivacyError(
                    f"layer {name} ({type(layer).__name__}) has parameters but no per-sample gradient rule: register "
                    "one with opacus.grad_sample.register_grad_sampler, or move its parameters into supported layers")
            self.layers.append(_Layer(name, layer, rule))
        if not self.layers:
            raise PrivacyError("the private modules have no trainable parameters")
        self.params = [p for lay in self.layers for p in lay.params]
        if any(p.dtype != self.params[0].dtype for p in self.params):
            raise PrivacyError("the private modules mix parameter dtypes; cast them to one dtype before training")
        self._sum: dict[Any, Any] = {}
        self._recording = False
        self.per_sample_norms: list[Any] = []
        self._torch = torch

    # -- hooks ---------------------------------------------------------------------------------
    def attach(self) -> "PerSampleClipper":
        for lay in self.layers:
            lay.handle = lay.layer.register_forward_hook(self._forward_hook(lay))
            if lay.rule == "linear" and lay.layer.bias is not None and lay.layer.bias.requires_grad:
                # The output still requires grad through the bias, so the hook sees dL/d(out); autograd
                # then skips the weight-gradient matmul we recompute (clipped) ourselves.
                lay.layer.weight.requires_grad_(False)
                lay.frozen.append(lay.layer.weight)
        return self

    def detach(self) -> None:
        for lay in self.layers:
            if lay.handle is not None:
                lay.handle.remove()
                lay.handle = None
            for p in lay.frozen:
                p.requires_grad_(True)
            lay.frozen.clear()
            lay.acts.clear()
            lay.grads.clear()

    def _forward_hook(self, lay: _Layer):
        def hook(module, inputs, output):
            if not self._recording or not isinstance(output, self._torch.Tensor) or not output.requires_grad:
                return None
            lay.acts.append([x.detach() if isinstance(x, self._torch.Tensor) else x for x in inputs])
            idx = len(lay.acts) - 1

            def grad_hook(g, idx=idx):
                while len(lay.grads) <= idx:
                    lay.grads.append(None)
                lay.grads[idx] = g.detach()

            output.register_hook(grad_hook)
            return None

        return hook

    # -- one physical batch ----------------------------------------------------------------------
    def record(self):
        """Context in which forward calls of the private layers are captured."""
        clipper = self

        class _Rec:
            def __enter__(self_inner):
                clipper._recording = True
                for lay in clipper.layers:
                    lay.acts.clear()
                    lay.grads.clear()

            def __exit__(self_inner, *exc):
                clipper._recording = False

        return _Rec()

    def backward_and_clip(self, loss: Any, batch_size: int) -> Any:
        """Backward ``loss`` (the mean over ``batch_size`` records), clip each record's gradient, add to the sum.

        Returns the per-sample gradient norms before clipping.
        """
        torch = self._torch
        for p in self.params:
            p.grad = None
        loss.backward()
        scale = float(batch_size)  # loss is a mean: dL/dout_i = (1/b) * dl_i/dout_i
        per_layer: list[tuple[_Layer, Any]] = []
        sq = torch.zeros(batch_size, dtype=torch.float32)
        for lay in self.layers:
            calls = [(a, g) for a, g in zip(lay.acts, lay.grads) if g is not None]
            if not calls:
                continue  # layer not used in this loss: zero gradient
            for a, g in calls:
                if g.shape[0] != batch_size:
                    raise PrivacyError(
                        f"layer {lay.name} was called on a batch of {g.shape[0]} items in a loss over {batch_size} "
                        "records: every call of a private module must take the batch's records (or one synthetic "
                        "item per record) along the first dimension")
            if lay.rule == "linear":
                # G is kept unscaled (dL/dout of the mean loss); the factor ``scale`` is applied to the
                # squared norms and folded into the clipping coefficients, saving a copy per layer.
                has_bias = lay.layer.bias is not None and lay.layer.bias.requires_grad
                if len(calls) == 1 and calls[0][1].dim() == 2:
                    # The common MLP case, one row per record: ||g a^T||^2 = ||a||^2 ||g||^2 (+ ||g||^2 for the bias).
                    A, G = calls[0][0][0], calls[0][1]
                    if A.dtype != G.dtype:
                        A = A.to(G.dtype)
                    g2 = (G * G).sum(1)
                    a2 = (A * A).sum(1)
                    n2 = g2 * (a2 + 1.0) if has_bias else g2 * a2
                    per_layer.append((lay, (A, G)))
                else:
                    def rows3(t):
                        return t.reshape(batch_size, -1, t.shape[-1])

                    dtype = calls[0][1].dtype
                    A = torch.cat([rows3(a[0]) for a, _ in calls], dim=1).to(dtype)
                    G = torch.cat([rows3(g) for _, g in calls], dim=1)
                    rows, din, dout = A.shape[1], A.shape[2], G.shape[2]
                    if rows * (din + dout) < din * dout:  # ghost norm: R^2 (din + dout) per record
                        n2 = (torch.bmm(A, A.transpose(1, 2)) * torch.bmm(G, G.transpose(1, 2))).sum((1, 2))
                    else:  # materialised: R din dout per record
                        n2 = torch.bmm(G.transpose(1, 2), A).pow(2).sum((1, 2))
                    if has_bias:
                        n2 = n2 + G.sum(1).pow(2).sum(1)
                    per_layer.append((lay, (A.reshape(-1, din), G.reshape(-1, dout), rows)))
                sq = sq + n2.float() * (scale * scale)
                continue
            else:
                gs: dict[Any, Any] = {}
                for a, g in calls:
                    if lay.rule == "opacus":
                        got = _grad_samplers()[type(lay.layer)](lay.layer, a, g * scale)
                    else:
                        from opacus.grad_sample.functorch import ft_compute_per_sample_gradient

                        got = ft_compute_per_sample_gradient(lay.layer, a, g * scale)
                    for p, v in got.items():
                        if p.requires_grad:
                            gs[p] = gs[p] + v if p in gs else v
                n2 = sum(v.reshape(batch_size, -1).pow(2).sum(1) for v in gs.values())
                per_layer.append((lay, gs))
            sq = sq + n2.float()
        norms = sq.clamp_min(0).sqrt()
        coef = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        cs = coef * scale  # clipping coefficient times the mean-loss factor
        with torch.no_grad():
            for lay, stuff in per_layer:
                if lay.rule == "linear":
                    if len(stuff) == 2:
                        A, G = stuff
                        c = cs.to(G.dtype)
                    else:  # several rows per record: repeat each record's coefficient over its rows
                        A, G, rows = stuff
                        c = cs.to(G.dtype).repeat_interleave(rows)
                    Gc = G * c[:, None]
                    # sum_i c_i g_i a_i^T as one matmul: the cost of the ordinary weight gradient.
                    self._add(lay.layer.weight, torch.mm(Gc.t(), A))
                    if lay.layer.bias is not None and lay.layer.bias.requires_grad:
                        self._add(lay.layer.bias, Gc.sum(0))
                else:
                    for p, v in stuff.items():
                        self._add(p, torch.einsum("b,b...->...", coef.to(v.dtype), v))
        for lay in self.layers:
            lay.acts.clear()
            lay.grads.clear()
        for p in self.params:
            p.grad = None
        return norms.detach()

    def _add(self, p: Any, value: Any) -> None:
        if p in self._sum:
            self._sum[p].add_(value)
        else:
            self._sum[p] = value  # always a fresh tensor (matmul / sum / einsum result): no copy needed

    def take_clipped_sum(self) -> dict[Any, Any]:
        """The accumulated ``sum_i clip(g_i)`` per parameter (zeros for unused ones); resets the sum."""
        torch = self._torch
        out = {p: self._sum[p] if p in self._sum else torch.zeros_like(p) for p in self.params}
        self._sum = {}
        return out
