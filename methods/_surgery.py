"""Weight surgery of Hesse et al. (CVPR-W 2025, arXiv 2504.12939), step 3, for k >= 2 concepts.

Given ARVs ``a_i`` (one per concept) of output channel c, each input channel j goes to the
first concept i (in concept order) with ``rho * a_i_j > max_{l != i} a_l_j``, else it is
shared. For k = 2 this is the reference rule exactly: j in S1 if rho*a1_j > a2_j; else j in
S2 if rho*a2_j > a1_j; else shared (S1 wins when both hold, possible for negative ARVs).

Virtual neuron d_i keeps the weights of S_i and of the shared set (all other input weights
zeroed), the residual ``res`` keeps the shared set only, and every one of them keeps the
channel's bias, so that ``z_c = sum_i d_i - (k-1) * res`` holds exactly (the bias appears
k - (k-1) = 1 times). :class:`DisentangledConv` replaces the conv: one conv with C + k output
channels (slot c = d_1, slots C..C+k-2 = d_2..d_k, slot C+k-1 = res, as in the reference for
k = 2) followed by the merge. The reference merges with a dense 1x1 conv (identity plus
M[c, C+i] = +1, M[c, C+k-1] = -(k-1)); here the same linear map is applied as explicit
arithmetic (:meth:`DisentangledConv.merge_weight` gives the matrix), which keeps the other
channels bit-identical and is not degraded by TF32 convolutions on GPUs.

rho objective (the reference's, generalised): with P_i(x) = sum_hw max(d_i(x), 0),
``sum_i mean_{x in concept i} P_i / (max_{l != i} P_l + 1e-5)``; for k = 2 this is
mean_{t1} P1/(P2+1e-5) + mean_{t2} P2/(P1+1e-5). The first rho of the grid reaching the
maximum wins (Python's ``max`` over the reference's dict does the same).

Tuning cost: the reference rewrites the model and runs the concept images through it once
per grid value (20 network passes; kept here as :func:`tune_rho_by_forward`). A conv's
output is linear in its weights, so :class:`GridEvaluator` reads the layer input of every
image ONCE and gets d_1..d_k of every distinct partition of the grid from a single conv call
over the stacked masked filters (a masked matmul for a 1x1 conv); the objective sums and
the reference images' peaks are accumulated batch by batch, so every fit image of the
concepts can be used without holding their maps in memory.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from benchmark.engine.layers import layer_activations
from benchmark.engine.memo import ImageMemo

RHO_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05, 0.10, ..., 1.00
EPS = 1e-5
SHARED = -1


def partition(arvs_kc: Tensor, rho: float) -> Tensor:
    """(C_in,) long: the concept index owning each input channel, or ``SHARED`` (-1)."""
    if arvs_kc.dim() != 2 or arvs_kc.shape[0] < 2:
        raise ValueError(f"partition needs ARVs of shape (k >= 2, C_in), got {tuple(arvs_kc.shape)}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    a = arvs_kc.double()
    k = a.shape[0]
    owner = torch.full((a.shape[1],), SHARED, dtype=torch.long)
    for i in range(k):
        others = torch.cat([a[:i], a[i + 1:]]).amax(0)
        wins = (rho * a[i] > others) & (owner == SHARED)
        owner[wins] = i
    return owner


def virtual_weights(conv: nn.Conv2d, channel: int, owner: Tensor, k: int) -> tuple[Tensor, Tensor | None]:
    """Weights (k+1, C_in, kh, kw) of d_1..d_k and res, and their bias (k+1,) (or None)."""
    w = conv.weight.detach()[channel]
    owner = owner.to(w.device)
    rows = []
    for i in range(k):
        keep = (owner == i) | (owner == SHARED)
        rows.append(w * keep[:, None, None].to(w.dtype))
    rows.append(w * (owner == SHARED)[:, None, None].to(w.dtype))
    bias = None if conv.bias is None else conv.bias.detach()[channel].repeat(k + 1)
    return torch.stack(rows), bias


def _conv_like(conv: nn.Conv2d, out_channels: int, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                    conv.dilation, 1, bias is not None, conv.padding_mode,  # type: ignore[arg-type]  # Conv2d keeps 2-tuples; its stubs say tuple[int, ...]
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            assert new.bias is not None  # built with bias=True above
            new.bias.copy_(bias)
    new.weight.requires_grad_(conv.weight.requires_grad)
    return new


def virtual_conv(conv: nn.Conv2d, channel: int, owner: Tensor, k: int) -> nn.Conv2d:
    """A conv computing only (d_1, ..., d_k, res) from the layer input."""
    weight, bias = virtual_weights(conv, channel, owner, k)
    return _conv_like(conv, k + 1, weight, bias)


class DisentangledConv(nn.Module):
    """Drop-in replacement of a Conv2d whose channel ``channel`` is split into k virtual
    neurons; its output equals the original conv's (see module docstring)."""

    def __init__(self, conv: nn.Conv2d, channel: int, owner: Tensor, k: int):
        super().__init__()
        if conv.groups != 1:
            raise ValueError(f"surgery supports groups=1 convolutions, got groups={conv.groups}")
        C = conv.out_channels
        weight, bias = virtual_weights(conv, channel, owner, k)
        full_w = torch.cat([conv.weight.detach(), weight[1:]])
        full_w[channel] = weight[0]
        full_b = None
        if conv.bias is not None:
            assert bias is not None  # virtual_weights gives a bias exactly when the conv has one
            full_b = torch.cat([conv.bias.detach(), bias[1:]])
        self.expanded = _conv_like(conv, C + k, full_w, full_b)
        self.channel, self.k, self.out_channels = int(channel), int(k), int(C)

    def virtual_slots(self) -> list[int]:
        """Output slots of ``expanded`` holding d_1..d_k (the residual is the last slot)."""
        C = self.out_channels
        return [self.channel] + list(range(C, C + self.k - 1))

    def merge_weight(self) -> Tensor:
        """The (C, C+k, 1, 1) 1x1 merge conv of the reference that ``forward`` applies."""
        C, k = self.out_channels, self.k
        m = torch.zeros(C, C + k, 1, 1, dtype=self.expanded.weight.dtype)
        m[torch.arange(C), torch.arange(C)] = 1.0
        m[self.channel, C:C + k - 1] = 1.0
        m[self.channel, C + k - 1] = -(k - 1.0)
        return m

    def forward(self, x: Tensor) -> Tensor:
        y = self.expanded(x)
        C, c = self.out_channels, self.channel
        merged = y[:, self.virtual_slots()].sum(1) - (self.k - 1) * y[:, C + self.k - 1]
        return torch.cat([y[:, :c], merged[:, None], y[:, c + 1:C]], dim=1)


def disentangle_model(model: nn.Module, layer: str, channel: int, owner: Tensor, k: int) -> nn.Module:
    """A deep copy of ``model`` (eval mode) with the conv at ``layer`` replaced by a
    :class:`DisentangledConv`; the caller's model is not touched."""
    new = copy.deepcopy(model)
    parent_name, _, name = layer.rpartition(".")
    parent = new.get_submodule(parent_name) if parent_name else new
    conv = getattr(parent, name)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"surgery needs a Conv2d at {layer!r}, found {type(conv).__name__}")
    setattr(parent, name, DisentangledConv(conv, channel, owner, k))
    return new.eval()


def positive_mass(d_nkhw: Tensor) -> Tensor:
    """P (N, k) = sum_hw max(d, 0)."""
    return d_nkhw.clamp(min=0).flatten(2).sum(-1).double()


def rho_objective(masses: Sequence[Tensor]) -> float:
    """``sum_i mean_{x in concept i} P_i / (max_{l != i} P_l + eps)``; ``masses[i]`` is the
    (N_i, k) positive mass of the images of concept i."""
    total = 0.0
    for i, p in enumerate(masses):
        others = torch.cat([p[:, :i], p[:, i + 1:]], dim=1).amax(1)
        total += float((p[:, i] / (others + EPS)).mean())
    return total


def grid_partitions(arvs_kc: Tensor, grid: Sequence[float]) -> tuple[Tensor, list[int]]:
    """The distinct partitions (U, C_in) over ``grid`` (in order of first appearance) and, for
    each grid value, the index of its partition (many rho values give the same sets)."""
    owners: list[Tensor] = []
    index: list[int] = []
    for rho in grid:
        owner = partition(arvs_kc, float(rho))
        for u, seen in enumerate(owners):
            if torch.equal(seen, owner):
                index.append(u)
                break
        else:
            owners.append(owner)
            index.append(len(owners) - 1)
    return torch.stack(owners), index


class GridEvaluator:
    """Evaluates every partition of a rho grid at once from a conv's layer input.

    A conv's output is linear in its weights, so d_i under partition u is
    ``conv(x, W_c * keep_ui)``: ONE conv call over the stacked masked filters (U * k output
    channels; for a 1x1 stride-1 conv this is a single masked matmul) gives every virtual
    neuron of every grid value, without running the network again per rho. Per concept i it
    accumulates the objective's sums ``sum_x P_i / (max_{l != i} P_l + eps)`` and keeps
    the peak (max spatial value) of d_i on every image (for the reference images).
    """

    def __init__(self, conv: nn.Conv2d, channel: int, arvs_kc: Tensor, grid: Sequence[float] = RHO_GRID):
        self.grid = tuple(float(r) for r in grid)
        if not self.grid:
            raise ValueError("the rho grid is empty")
        self.conv, self.k = conv, int(arvs_kc.shape[0])
        self.owners, self.index = grid_partitions(arvs_kc, self.grid)
        U = self.owners.shape[0]
        weights = [virtual_weights(conv, channel, owner, self.k) for owner in self.owners]
        self.weight = torch.cat([w[:self.k] for w, _ in weights])  # (U*k, C_in, kh, kw): d only
        self.bias = None if conv.bias is None else torch.cat([b[:self.k] for _, b in weights])  # type: ignore[index]  # b exists when conv.bias does
        self.sums = torch.zeros(self.k, U, dtype=torch.float64)
        self.counts = [0] * self.k
        self.peaks: list[list[Tensor]] = [[] for _ in range(self.k)]

    def virtual(self, x: Tensor) -> Tensor:
        """(N, U, k, H, W): d_1..d_k of every distinct partition for layer inputs ``x``."""
        with torch.no_grad():
            d = self.conv._conv_forward(x, self.weight.to(x.device, x.dtype),
                                        None if self.bias is None else self.bias.to(x.device, x.dtype))
        return d.view(d.shape[0], -1, self.k, *d.shape[2:])

    def add(self, concept: int, x: Tensor) -> None:
        """Accumulates a batch ``x`` (N, C_in, H, W) of layer inputs of concept ``concept``'s images."""
        d = self.virtual(x)
        mass = d.clamp(min=0).flatten(3).sum(-1).double()  # (N, U, k)
        i = concept
        others = torch.cat([mass[..., :i], mass[..., i + 1:]], dim=-1).amax(-1)
        self.sums[i] += (mass[..., i] / (others + EPS)).sum(0).cpu()
        self.counts[i] += int(x.shape[0])
        self.peaks[i].append(d[:, :, i].flatten(2).amax(-1).double().cpu())  # (N, U)

    def scores(self) -> dict[float, float]:
        """The objective of every grid value (needs images of every concept)."""
        if min(self.counts) == 0:
            raise ValueError(f"rho tuning needs images of every concept; counts per concept: {self.counts}")
        per_u = (self.sums / torch.tensor(self.counts, dtype=torch.float64)[:, None]).sum(0)
        return {rho: float(per_u[u]) for rho, u in zip(self.grid, self.index)}

    def best(self) -> tuple[float, dict[float, float]]:
        """The grid rho maximising the objective (first maximum in grid order) and all scores."""
        scores = self.scores()
        return max(scores, key=lambda rho: scores[rho]), scores

    def owner(self, rho: float) -> Tensor:
        return self.owners[self.index[self.grid.index(float(rho))]]

    def peak(self, concept: int, rho: float) -> Tensor:
        """(N_i,) max spatial value of d_i under ``rho`` on the images added for ``concept``."""
        u = self.index[self.grid.index(float(rho))]
        return torch.cat(self.peaks[concept])[:, u]


def tune_rho(conv: nn.Conv2d, channel: int, arvs_kc: Tensor, inputs: Sequence[Tensor],
             grid: Sequence[float] = RHO_GRID) -> tuple[float, dict[float, float]]:
    """The grid rho maximising :func:`rho_objective` on the layer inputs ``inputs[i]``
    (N_i, C_in, H, W) of concept i's images, and the objective of every grid value
    (closed form: :class:`GridEvaluator`)."""
    evaluator = GridEvaluator(conv, channel, arvs_kc, grid)
    for i, x in enumerate(inputs):
        evaluator.add(i, x)
    return evaluator.best()


def tune_rho_by_forward(model: nn.Module, layer: str, channel: int, arvs_kc: Tensor,
                        images: Sequence[Tensor], grid: Sequence[float] = RHO_GRID
                        ) -> tuple[float, dict[float, float]]:
    """The authors' procedure, kept as the reference: for every rho, rewrite the model and run
    ``images[i]`` (concept i's images) through it to read d_1..d_k. Same result as
    :func:`tune_rho` (up to float rounding), one network forward per rho and batch."""
    k = arvs_kc.shape[0]
    scores: dict[float, float] = {}
    with torch.no_grad():
        for rho in grid:
            owner = partition(arvs_kc, float(rho))
            rewritten = disentangle_model(model, layer, channel, owner, k)
            module = rewritten.get_submodule(layer)
            slots = module.virtual_slots()  # type: ignore[operator]  # a DisentangledConv, typed as Module
            masses = [positive_mass(layer_activations(rewritten, f"{layer}.expanded", x)[:, slots]) for x in images]
            scores[float(rho)] = rho_objective(masses)
    best = max(scores, key=lambda rho: scores[rho])
    return best, scores


def surgery_fns(model: nn.Module, layer: str, module: DisentangledConv):
    """virtual and residual functions sharing ONE forward of the rewritten layer per image
    (:class:`benchmark.engine.memo.ImageMemo`: the metrics ask for both on the same images)."""
    slots, path = module.virtual_slots() + [module.out_channels + module.k - 1], f"{layer}.expanded"
    k = module.k
    both = ImageMemo(lambda images: layer_activations(model, path, images)[:, slots])

    def virtual(images: Tensor) -> Tensor:
        return both(images)[:, :k]

    def residual(images: Tensor) -> Tensor:
        return both(images)[:, k]

    return virtual, residual
