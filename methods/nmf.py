"""An NMF split of a conv channel's input contributions, CRAFT-style (Fel, Picard, Béthune,
Boissin, Vigouroux, Colin, Cadène, Serre, "CRAFT: Concept Recursive Activation FacTorization
for Explainability", CVPR 2023, Sec. 3.1: non-negative factorisation A ~ U W of a layer's
non-negative activations over images, the rows of W being concepts).

Here the factorised matrix is the target channel's input contributions: for a Conv2d with
weight W, output channel c and layer input x, input channel j contributes the map
``conv(x_j, W[c, j])`` (no bias) and the channel is the sum of these maps plus the bias. On
the channel's fit references (``n_ref`` images with the largest max activation) take

    A[n, j] = sum_hw max(conv(x_j, W[c, j]), 0)     (n references x C_in, non-negative)

i.e. how much input channel j drives channel c up on reference n, and factorise A ~ U H with
scikit-learn's NMF (k components, ``init="nndsvda"``, seeded). Component i's input-channel
profile H[i] gives soft masks ``m_ij = H_ij / sum_l H_lj`` (an input channel no component
uses gets 1/k each), so the masks sum to one per input channel and the virtual neurons

    v_i(x) = conv(x, W[c] * m_i)      (no bias),      res(x) = bias_c

recompose the channel exactly: ``orig = sum_i v_i + res`` (the dictionary recomposition).

Deviations from CRAFT: the factorised matrix is the contributions to one channel, not the
activations of a layer (so each component is a soft set of input channels, a weight surgery
with fractional masks rather than a direction in activation space); only the positive part of
each contribution map enters A (contributions can be negative, and NMF needs non-negative
data; the negative parts are still split by the same masks). No recursion over layers, no
Sobol importance. Why not ``overcomplete``'s NMF / semi-NMF: its 0.3.0 wheel does not import
with matplotlib >= 3.9 (see :mod:`methods.sae`); scikit-learn's NMF is the reference solver.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from benchmark.engine.layers import get_layer, layer_activations
from benchmark.engine.references import top_max_references
from methods._dictionary import dictionary_split, group_references
from methods._pooled import check_alive, check_target

NAME = "nmf"


def input_contributions(conv: nn.Conv2d, channel: int, x: Tensor) -> Tensor:
    """(N, C_in, H', W') contribution map of every input channel to output ``channel`` (no bias)."""
    weight = conv.weight[channel][:, None]  # (C_in, 1, kh, kw): one filter per input channel
    return F.conv2d(x, weight.to(x), None, conv.stride, conv.padding, conv.dilation, groups=x.shape[1])


def contribution_masks(h_kc: np.ndarray) -> Tensor:
    """(k, C_in) soft masks from the NMF profiles: columns sum to 1 (1/k where all are zero)."""
    h = torch.as_tensor(h_kc, dtype=torch.float64).clamp(min=0)
    total = h.sum(0, keepdim=True)
    masks = torch.where(total > 0, h / total.clamp(min=1e-300), torch.full_like(h, 1.0 / h.shape[0]))
    return masks


@METHODS.register(NAME)
@dataclass(frozen=True)
class ContributionNMF(Method):
    """NMF of the channel's per-input-channel contributions (CRAFT-style, Fel et al. 2023): soft input masks.

    Defaults (none read off a benchmark target): ``k`` 2 components (the default of PURE and
    of the other fixed-k methods); ``n_ref`` 100 references as PURE; ``max_iter`` 1000 and
    ``tol`` 1e-6 let scikit-learn's coordinate descent converge on 100 x C_in matrices;
    ``seed`` of the NNDSVDa initialisation's random fill.
    """

    role: ClassVar[str] = "generic"
    citation: ClassVar[str] = "Fel et al. 2023"

    k: int = 2
    n_ref: int = 100
    max_iter: int = 1000
    tol: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k must be >= 2, got {self.k}")
        if self.n_ref < 1 or self.max_iter < 1:
            raise ValueError(f"n_ref and max_iter must be >= 1, got {self.n_ref} and {self.max_iter}")

    def fit(self, context: Context, target: Target) -> Split:
        check_target(context, target)
        conv = get_layer(context.model, target.layer)
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
            raise NotApplicable(f"{NAME} splits the input weights of a Conv2d with groups=1; {target.layer!r} is "
                                f"{type(conv).__name__}" + (f" with groups={conv.groups}" if isinstance(conv, nn.Conv2d) else ""))
        check_alive(context, target.channel)
        c, k = target.channel, self.k
        ids, _ = top_max_references(context, c, self.n_ref)
        with torch.no_grad():
            maps = [input_contributions(conv, c, self._inputs(context, ids[s:s + context.batch_size])).double()
                    for s in range(0, ids.numel(), context.batch_size)]
            positive = torch.cat([m.clamp(min=0).flatten(2).sum(-1) for m in maps])  # (n, C_in)
        if int((positive.sum(0) > 0).sum()) < k:
            raise NotApplicable(f"{NAME}: fewer than k={k} input channels drive channel {c} up on its references")
        from sklearn.decomposition import NMF

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the iteration count is recorded in info
            model = NMF(n_components=k, init="nndsvda", max_iter=self.max_iter, tol=self.tol, random_state=self.seed)
            model.fit(positive.numpy())
        masks = contribution_masks(model.components_)
        order = torch.argsort(-(masks * positive.sum(0)).sum(1), stable=True)  # components by driven mass
        masks = masks[order]
        weight = conv.weight.detach()[c][None] * masks[:, :, None, None].to(conv.weight)  # (k, C_in, kh, kw)
        bias = None if conv.bias is None else conv.bias.detach()[c]
        with torch.no_grad():
            mass = torch.cat([torch.einsum("nj,kj->nk", m.flatten(2).clamp(min=0).sum(-1), masks) for m in maps])
        info = dict(k=k, iterations=int(model.n_iter_), reconstruction_error=float(model.reconstruction_err_),
                    shares=tuple(float(s) for s in (masks * positive.sum(0)).sum(1) / positive.sum().clamp(min=1e-300)))
        return dictionary_split(target=target, method=NAME, k=k, info=info, reference_ids=group_references(mass, ids),
                                parts_fn=_parts_fn(context, target, conv, weight, bias))

    @staticmethod
    def _inputs(context: Context, ids: Tensor) -> Tensor:
        return layer_activations(context.model, context.layer, context.fit.images(ids).to(context.device), side="input")


def _parts_fn(context: Context, target: Target, conv: nn.Conv2d, weight: Tensor, bias: Tensor | None):
    """images -> (N, k + 1, H, W): the masked convs (no bias), then the bias as the residual."""
    model, layer = context.model, target.layer

    def parts(images: Tensor) -> Tensor:
        x = layer_activations(model, layer, images, side="input")
        virtual = conv._conv_forward(x, weight.to(x), None)
        residual = torch.zeros_like(virtual[:, :1]) if bias is None else torch.full_like(virtual[:, :1], float(bias))
        return torch.cat([virtual, residual], dim=1)

    return parts
