"""``nn.MultiheadAttention`` whose projections follow a learning rule.

The packed in-projection (``in_proj``, 3E × E; or ``q_proj``, ``k_proj``, ``v_proj`` when kdim or
vdim differ from E) and ``out_proj`` are converted :class:`~alignment.layers.linear.Linear` layers;
the weight-free part (q·kᵀ, masks, softmax, dropout, ·v) is torch's own code, so its backward is
exact autograd. The forward repeats ``torch.nn.functional.multi_head_attention_forward`` step by
step with the same tensor layouts, so its output is bitwise torch's. When no rule backward is
needed (under ``torch.no_grad``, or under BP) it simply calls ``nn.MultiheadAttention.forward``,
fast path included.

State: ``in_proj_weight``, ``in_proj_bias``, ``q_proj_weight``, … remain readable (torch's
TransformerEncoderLayer reads them), but the Parameters live in the projection layers, so the
state_dict names are ``in_proj.weight``, ``in_proj.bias``, ``out_proj.weight``, … next to the
rule's tensors (``in_proj.B``, …). ``bias_k``/``bias_v`` (add_bias_kv) stay plain Parameters,
trained by exact autograd like every weight-free step.

The projections see their inputs batch first (B, T, E), whatever the module's ``batch_first``, so
hooks and the Recorder see the batch in dim 0, and DFA routes errors per (batch, position).
A packed in-projection used on different query and key tensors (cross-attention) runs once per
input, on the rows torch uses for it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignment.layers.linear import Linear

if TYPE_CHECKING:
    from alignment.rules.base import Rule


def _linear_like(weight: Tensor, bias: Tensor | None, training: bool) -> SimpleNamespace:
    return SimpleNamespace(
        weight=weight,
        bias=bias,
        in_features=weight.shape[1],
        out_features=weight.shape[0],
        training=training,
    )


class MultiheadAttention(nn.MultiheadAttention):
    """A converted ``nn.MultiheadAttention`` (build it with :func:`alignment.convert`)."""

    in_proj: Linear | None
    out_proj: Linear

    @classmethod
    def from_module(cls, module: nn.MultiheadAttention, rule: Rule) -> MultiheadAttention:
        """A converted copy of ``module`` (weights copied bitwise) under ``rule``."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        for name in ("embed_dim", "kdim", "vdim", "_qkv_same_embed_dim", "num_heads"):
            setattr(self, name, getattr(module, name))
        for name in ("dropout", "batch_first", "head_dim", "add_zero_attn"):
            setattr(self, name, getattr(module, name))
        E, training = module.embed_dim, module.training
        bias = module.in_proj_bias
        if module._qkv_same_embed_dim:
            self.in_proj = Linear.from_module(
                _linear_like(module.in_proj_weight, bias, training), rule
            )
            self.q_proj = self.k_proj = self.v_proj = None
        else:
            self.in_proj = None
            biases = (None,) * 3 if bias is None else bias.chunk(3)
            weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
            for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weights, biases, strict=True):
                setattr(self, name, Linear.from_module(_linear_like(w, b, training), rule))
        self.out_proj = Linear.from_module(module.out_proj, rule)
        for name in ("bias_k", "bias_v"):
            value = getattr(module, name)
            if value is None:
                setattr(self, name, None)
            else:
                self.register_parameter(name, nn.Parameter(value.detach().clone()))
        assert E == self.out_proj.in_features
        self.train(training)
        return self

    # torch's forward and TransformerEncoderLayer read these names
    @property
    def in_proj_weight(self) -> Tensor | None:
        return None if self.in_proj is None else self.in_proj.weight

    @property
    def in_proj_bias(self) -> Tensor | None:
        if self.in_proj is not None:
            return self.in_proj.bias
        if self.q_proj.bias is None:
            return None
        return torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])

    @property
    def q_proj_weight(self) -> Tensor | None:
        return None if self.q_proj is None else self.q_proj.weight

    @property
    def k_proj_weight(self) -> Tensor | None:
        return None if self.k_proj is None else self.k_proj.weight

    @property
    def v_proj_weight(self) -> Tensor | None:
        return None if self.v_proj is None else self.v_proj.weight

    def projections(self) -> list[Linear]:
        """The converted layers, in the order the forward runs them."""
        layers = [self.in_proj] if self.in_proj is not None else [self.q_proj, self.k_proj]
        layers += [] if self.in_proj is not None else [self.v_proj]
        return [*layers, self.out_proj]

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if self._torch_forward_suffices():
            return super().forward(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        if query.is_nested or key.is_nested or value.is_nested:
            raise TypeError("converted MultiheadAttention: nested tensors are not supported")
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask,
            mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask",
            target_type=query.dtype,
        )
        attn_mask = F._canonical_mask(
            mask=attn_mask,
            mask_name="attn_mask",
            other_type=None,
            other_name="",
            target_type=query.dtype,
            check_other=False,
        )
        out, weights = self._attention(
            query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
            is_causal,
        )  # fmt: skip
        return out, weights

    def _torch_forward_suffices(self) -> bool:
        """Without grad and without hooks on the projections, torch's own forward (its fast path
        included) gives the original module's output and nothing needs the projections to run."""
        if torch.is_grad_enabled():
            return False
        return not any(p._forward_hooks or p._forward_pre_hooks for p in self.projections())

    def _batch_first(self, x: Tensor, is_batched: bool) -> Tensor:
        """x as (B, T, E) such that x.transpose(0, 1) is the tensor torch projects."""
        if not is_batched:
            return x.unsqueeze(1).transpose(0, 1)
        return x if self.batch_first else x.transpose(0, 1)

    def _in_projection(
        self, query: Tensor, key: Tensor, value: Tensor, is_batched: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v in torch's (T, B, E) layout, each bitwise torch's."""
        E = self.embed_dim
        q_bf, k_bf, v_bf = (self._batch_first(t, is_batched) for t in (query, key, value))
        if self.in_proj is None:
            return tuple(
                proj(x, layout="tbe").transpose(0, 1)
                for proj, x in ((self.q_proj, q_bf), (self.k_proj, k_bf), (self.v_proj, v_bf))
            )
        proj = self.in_proj
        if not is_batched:  # torch unsqueezes q, k and v one by one: three distinct tensors
            query, key, value = object(), object(), object()
        if key is value and query is key:
            packed = proj(q_bf, layout="tbe").transpose(0, 1)
            packed = packed.unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2)
            packed = packed.squeeze(-2).contiguous()
            return packed[0], packed[1], packed[2]
        if key is value:
            q = proj(q_bf, layout="tbe", rows=slice(0, E)).transpose(0, 1)
            kv = proj(k_bf, layout="tbe", rows=slice(E, 3 * E)).transpose(0, 1)
            kv = kv.unflatten(-1, (2, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
            return q, kv[0], kv[1]
        return tuple(
            proj(x, layout="tbe", rows=slice(i * E, (i + 1) * E)).transpose(0, 1)
            for i, x in enumerate((q_bf, k_bf, v_bf))
        )

    def _attention(  # noqa: C901 (torch's function, step by step, so its output is bitwise torch's)
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None,
        need_weights: bool,
        attn_mask: Tensor | None,
        average_attn_weights: bool,
        is_causal: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """``F.multi_head_attention_forward`` (torch 2.x), projections through the rule."""
        num_heads = self.num_heads
        is_batched = F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
        if self.batch_first and is_batched:
            tgt_len, bsz, embed_dim = query.shape[1], query.shape[0], query.shape[2]
            src_len = key.shape[1]
        elif is_batched:
            tgt_len, bsz, embed_dim = query.shape
            src_len = key.shape[0]
        else:
            (tgt_len, embed_dim), bsz, src_len = query.shape, 1, key.shape[0]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask,
            mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask",
            target_type=query.dtype,
        )
        if is_causal and attn_mask is None:
            raise RuntimeError(
                "Need attn_mask if specifying the is_causal hint. You may use the Transformer "
                "module method `generate_square_subsequent_mask` to create this mask."
            )
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None
        else:
            attn_mask = F._canonical_mask(
                mask=attn_mask,
                mask_name="attn_mask",
                other_type=None,
                other_name="",
                target_type=query.dtype,
                check_other=False,
            )
            if key_padding_mask is not None:
                is_causal = False
        if embed_dim != self.embed_dim:
            raise ValueError(f"was expecting embedding dimension {self.embed_dim}, got {embed_dim}")
        head_dim = embed_dim // num_heads
        q, k, v = self._in_projection(query, key, value, is_batched)
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                if attn_mask.shape != (tgt_len, src_len):
                    raise RuntimeError(
                        f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be "
                        f"{(tgt_len, src_len)}."
                    )
                attn_mask = attn_mask.unsqueeze(0)
            elif attn_mask.dim() == 3:
                if attn_mask.shape != (bsz * num_heads, tgt_len, src_len):
                    raise RuntimeError(
                        f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                        f"{(bsz * num_heads, tgt_len, src_len)}."
                    )
            else:
                raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        q = q.view(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
        k = k.view(k.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
        v = v.view(v.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zero_attn_shape = (bsz * num_heads, 1, head_dim)
            k = torch.cat([k, torch.zeros(zero_attn_shape, dtype=k.dtype, device=k.device)], 1)
            v = torch.cat([v, torch.zeros(zero_attn_shape, dtype=v.dtype, device=v.device)], 1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        src_len = k.size(1)
        if key_padding_mask is not None:
            F._check_key_padding_mask(key_padding_mask, src_len, bsz)
            key_padding_mask = (
                key_padding_mask.view(bsz, 1, 1, src_len)
                .expand(-1, num_heads, -1, -1)
                .reshape(bsz * num_heads, 1, src_len)
            )
            attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            q_scaled = q * math.sqrt(1.0 / float(q.shape[-1]))
            if attn_mask is not None:
                weights = torch.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
            else:
                weights = torch.bmm(q_scaled, k.transpose(-2, -1))
            weights = F.softmax(weights, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = torch.bmm(weights, v)
            out = out.transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
            weights = weights.view(bsz, num_heads, tgt_len, src_len)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not is_batched:
                weights = weights.squeeze(0)
        else:
            if attn_mask is not None:
                if attn_mask.size(0) == 1 and attn_mask.dim() == 3:
                    attn_mask = attn_mask.unsqueeze(0)
                else:
                    attn_mask = attn_mask.view(bsz, num_heads, -1, src_len)
            q = q.view(bsz, num_heads, tgt_len, head_dim)
            k = k.view(bsz, num_heads, src_len, head_dim)
            v = v.view(bsz, num_heads, src_len, head_dim)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
            out = out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, embed_dim)
        out_bf = self.out_proj(out.view(tgt_len, bsz, embed_dim).transpose(0, 1), layout="tbe_flat")
        if not is_batched:
            return out_bf.squeeze(0), weights
        return (out_bf if self.batch_first else out_bf.transpose(0, 1)), weights

    def extra_repr(self) -> str:
        heads = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        return f"{heads}, batch_first={self.batch_first}"
