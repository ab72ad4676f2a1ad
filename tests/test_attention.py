"""Converted nn.MultiheadAttention: forward bitwise torch's, the weight-free part exact autograd,
the projections under the rule (float64 oracles), and transformers that convert."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

import alignment
from alignment.layers.attention import MultiheadAttention

D64 = torch.float64
B, T, S = 3, 5, 4


def _inputs(bf: bool, kdim: int | None, kind: str, g: torch.Generator):
    E = 8
    shape = lambda n, e: (B, n, e) if bf else (n, B, e)  # noqa: E731
    q = torch.randn(shape(T, E), generator=g, dtype=D64, requires_grad=True)
    if kind == "self" and kdim is None:
        return (q, q, q), T
    k = torch.randn(shape(S, kdim or E), generator=g, dtype=D64)
    if kind == "kv" and kdim is None:
        return (q, k, k), S
    return (q, k, torch.randn(shape(S, kdim or E), generator=g, dtype=D64)), S


def _masks(src: int, g: torch.Generator) -> dict:
    attn = torch.rand(T, src, generator=g) > 0.7
    pad = torch.rand(B, src, generator=g) > 0.7
    attn[:, 0] = pad[:, 0] = False
    return {"attn_mask": attn, "key_padding_mask": pad}


CASES = [  # batch_first, kdim = vdim, bias, add_bias_kv, which inputs are the same tensor
    (True, None, True, False, "self"),
    (True, None, True, False, "kv"),
    (True, None, True, False, "qkv"),
    (False, None, True, False, "self"),
    (False, None, False, True, "kv"),
    (True, None, False, True, "self"),
    (True, 6, True, False, "qkv"),
    (False, 6, False, True, "qkv"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_forward_is_bitwise_torchs(case: tuple) -> None:
    bf, kdim, bias, bias_kv, kind = case
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(
        8, 2, batch_first=bf, kdim=kdim, vdim=kdim, bias=bias, add_bias_kv=bias_kv, dtype=D64
    )
    g = torch.Generator().manual_seed(1)
    args, src = _inputs(bf, kdim, kind, g)
    for rule in ("fa", "pfa"):
        converted = alignment.convert(plain, rule)
        assert isinstance(converted, MultiheadAttention)
        for need, avg, masks in itertools.product([True, False], [True, False], [{}, 1]):
            kwargs = {"need_weights": need, "average_attn_weights": avg}
            kwargs |= _masks(src, g) if masks else {}
            want, got = plain(*args, **kwargs), converted(*args, **kwargs)
            assert torch.equal(want[0], got[0]), (rule, kwargs)
            assert (want[1] is None and got[1] is None) or torch.equal(want[1], got[1])


def test_unbatched_input_and_causal_mask_are_bitwise_torchs() -> None:
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(8, 2, dtype=D64)
    converted = alignment.convert(plain, "fa")
    x = torch.randn(T, 8, dtype=D64, requires_grad=True)
    assert torch.equal(plain(x, x, x)[0], converted(x, x, x)[0])
    mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=D64)
    xb = torch.randn(T, B, 8, dtype=D64, requires_grad=True)
    kwargs = {"attn_mask": mask, "is_causal": True, "need_weights": False}
    assert torch.equal(plain(xb, xb, xb, **kwargs)[0], converted(xb, xb, xb, **kwargs)[0])


def _all_grads(module: nn.Module, args: tuple, seed: int = 3) -> dict[str, torch.Tensor]:
    """Input and parameter gradients, under torch's parameter names (biases of separate q/k/v
    projections concatenated, as torch packs them)."""
    out, _ = module(*args)
    e = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=D64)
    params = dict(module.named_parameters())
    inputs = [t for t in dict.fromkeys(args) if t.requires_grad]
    grads = torch.autograd.grad(out, inputs + list(params.values()), e)
    named = {f"input{i}": g for i, g in enumerate(grads[: len(inputs)])}
    named |= dict(zip(params, grads[len(inputs) :], strict=True))
    for p in ("in_proj", "q_proj", "k_proj", "v_proj"):
        if f"{p}.weight" in named:
            named[f"{p}_weight"] = named.pop(f"{p}.weight")
    if "in_proj.bias" in named:
        named["in_proj_bias"] = named.pop("in_proj.bias")
    if "q_proj.bias" in named:
        named["in_proj_bias"] = torch.cat([named.pop(f"{p}_proj.bias") for p in "qkv"])
    return named


@pytest.mark.parametrize("kind", ["self", "kv", "qkv"])
@pytest.mark.parametrize("kdim", [None, 6])
def test_backward_equals_autograd_under_bp_and_under_fa_with_b_equal_w(kind, kdim) -> None:
    """BP is torch's own forward; FA with B := W runs the rule path: both equal autograd."""
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim, add_bias_kv=True, dtype=D64)
    g = torch.Generator().manual_seed(1)
    args, _ = _inputs(False, kdim, kind, g)
    args = tuple(a.detach().requires_grad_() for a in args)
    if args[0].data_ptr() == args[1].data_ptr():
        args = (args[0],) * 3
    elif args[1].data_ptr() == args[2].data_ptr():
        args = (args[0], args[1], args[1])
    want = _all_grads(plain, args)
    bp = alignment.convert(plain, "bp")
    fa = alignment.convert(plain, "fa")
    for layer in fa.projections():
        layer.B.copy_(layer.weight.detach())
    for converted in (bp, fa):
        got = _all_grads(converted, args)
        assert set(got) == set(want)
        for name, w in want.items():
            torch.testing.assert_close(got[name], w, rtol=1e-10, atol=1e-12, msg=name)


def test_projections_send_their_error_through_the_rules_feedback() -> None:
    """FA on self-attention: e_in(x) = δ_in B_in, with δ_in the error at the in-projection's
    output (taken by autograd); PFA: grad_R = Bᵀ grad_W for the packed in-projection."""
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(8, 2, batch_first=True, dtype=D64)
    x = torch.randn(B, T, 8, dtype=D64, requires_grad=True)
    for rule in ("fa", "pfa"):
        net = alignment.convert(plain, rule)
        seen: dict = {}
        net.in_proj.register_forward_hook(lambda m, a, out, seen=seen: seen.setdefault("y", out))
        out, _ = net(x, x, x)
        e = torch.randn_like(out)
        layer = net.in_proj
        grads = torch.autograd.grad(out, [x, seen["y"], layer.weight, *layer_r(layer)], e)
        e_x, delta, grad_w = grads[:3]
        fb = layer.B.detach() if rule == "fa" else (layer.B @ layer.R).detach()
        torch.testing.assert_close(e_x, delta @ fb, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            grad_w, torch.einsum("bto,bti->oi", delta, x.detach()), rtol=1e-10, atol=1e-12
        )
        if rule == "pfa":
            torch.testing.assert_close(grads[3], layer.B.T @ grad_w, rtol=1e-10, atol=1e-12)


def layer_r(layer: nn.Module) -> list[torch.Tensor]:
    return [layer.R] if hasattr(layer, "R") else []


class Pooled(nn.Module):
    """Self-attention → mean over tokens → linear head: logits (B, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, dtype=D64)
        self.head = nn.Linear(8, 3, dtype=D64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def test_dfa_tiles_the_output_error_over_tokens_for_every_projection() -> None:
    torch.manual_seed(0)
    net = alignment.convert(Pooled(), "dfa")
    x = torch.randn(B, T, 8, dtype=D64, requires_grad=True)
    seen = {}
    net.attn.out_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("a", a[0]))
    y = net(x)
    e_out = torch.randn_like(y)
    e_x, e_a = torch.autograd.grad(y, [x, seen["a"]], e_out)
    tiled = lambda D: (e_out @ D)[:, None, :].expand(B, T, -1)  # noqa: E731
    torch.testing.assert_close(e_x, tiled(net.attn.in_proj.D), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e_a, tiled(net.attn.out_proj.D), rtol=1e-10, atol=1e-12)


def _small_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    ).double()


VIT_RULES = [
    rule if rule in ("bp", "dfa", "pfa") else pytest.param(rule, marks=pytest.mark.slow)
    for rule in alignment.RULES
]


@pytest.mark.parametrize("rule", VIT_RULES)
def test_small_vit_converts_every_attention_and_keeps_its_outputs(rule: str) -> None:
    vit = _small_vit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all: attention converts, embeddings add
        converted = alignment.convert(vit, rule)
    attns = [m for m in converted.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attns) == 2 and all(isinstance(m, MultiheadAttention) for m in attns)
    x = torch.randn(2, 3, 28, 28, dtype=D64)
    assert torch.equal(converted(x), vit(x))
    converted(x).square().sum().backward()
    for attn in attns:
        assert all(p.grad is not None for p in attn.parameters())
    vit.eval(), converted.eval()
    with torch.no_grad():
        assert torch.equal(converted(x), vit(x))


def test_transformer_encoder_and_decoder_convert_and_use_the_rule() -> None:
    """The encoder layer's fast path (eval, no grad) gives the original's output; with grad
    the converted attention runs (its input error differs from BP's under FA)."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, dtype=D64), 2,
        enable_nested_tensor=False,
    )  # fmt: skip
    dec = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True, dtype=D64)
    x = torch.randn(B, T, 8, dtype=D64, requires_grad=True)
    mem = torch.randn(B, S, 8, dtype=D64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fa_enc, bp_enc = alignment.convert(enc, "fa"), alignment.convert(enc, "bp")
        fa_dec = alignment.convert(dec, "fa")
    assert torch.equal(fa_enc(x), enc(x)) and torch.equal(fa_dec(x, mem), dec(x, mem))
    for model in (enc, fa_enc):
        model.eval()
    with torch.no_grad():
        assert torch.equal(fa_enc(x), enc(x))
    ran = []
    fa_enc.layers[0].self_attn.in_proj.register_forward_hook(lambda *a: ran.append(1))
    e = torch.randn(B, T, 8, dtype=D64)  # (a plain sum after LayerNorm has zero gradient)
    fa_grad = torch.autograd.grad(fa_enc(x), x, e)[0]
    bp_enc.eval()
    bp_grad = torch.autograd.grad(bp_enc(x), x, e)[0]
    assert ran == [1]  # eval mode, grad enabled: no fast path, the rule's projection ran
    assert not torch.allclose(fa_grad, bp_grad, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(bp_grad, torch.autograd.grad(enc(x), x, e)[0])


@pytest.mark.slow  # about 10 s: 86 M weights copied, B drawn for each
def test_vit_b_16_converts_without_warnings_and_keeps_its_outputs() -> None:
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    vit = vit_b_16(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = alignment.convert(vit, "fa").eval()
    assert sum(isinstance(m, MultiheadAttention) for m in converted.modules()) == 12
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(converted(x), vit(x))
