"""Attribution relevance vectors (ARVs) and gamma-polysemanticity (Hesse et al., CVPR-W 2025).

Hesse, Fischer, Schaub-Meyer, Roth, "Disentangling Polysemantic Channels in Convolutional
Neural Networks" (arXiv 2504.12939), steps 1-2, as their public code computes them:

* ARV(c, t)_j = mean over the images of class (set) t of
  ``sum_hw x_j(h,w) * d(sum_hw z_c) / d x_j(h,w)`` (Input x Gradient at the layer input x
  for the spatially summed output z_c; signed, unnormalised, one value per input channel).
* For a linear 1x1 convolution with stride 1 this is ``W[c, j] * mean_n sum_hw x_j``, read
  from the cached per-class input sums (:func:`arv`). For any other span (a k x k, strided
  or padded conv, where border positions are seen by fewer taps, or a nonlinear block) the
  gradients are computed for real (:func:`arv_by_gradient`), batched over channels.
* Candidate channels are relevant (``LayerStats.relevant_classes(p)``) to >= 2 classes;
  every class pair of a candidate is tested; a pair is gamma-polysemantic iff the cosine of
  its two ARVs is below gamma (0.5 in the paper).

Shared by the ``arv_surgery`` method and the runner's pairs/detection tracks; it imports no
method. Numbers are accumulated in float64 (the reference stores per-image vectors in
float16 before averaging).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from benchmark.engine.layer_stats import LayerStats
from benchmark.engine.layers import check_channel, eval_mode, frozen_parameters, get_layer
from benchmark.sources.datasets import ImageDataset

_MAX_BATCHED_ELEMENTS = 2**25  # elements of one channel-batched gradient (m, B, C_in, H, W)


def closed_form_exact(layer: nn.Module) -> bool:
    """True iff the ARV of ``layer`` equals ``W[c, :] * mean sum_hw x`` exactly: a
    ``Conv2d`` with groups=1, a 1x1 kernel, stride 1 and zero padding (any dilation;
    bias is irrelevant to the gradient)."""
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1:
        return False
    if tuple(layer.kernel_size) != (1, 1) or tuple(layer.stride) != (1, 1):
        return False
    no_padding = layer.padding in ("valid", "same") or tuple(layer.padding) == (0, 0)
    return no_padding or layer.padding_mode == "zeros"


def arv(model: nn.Module, layer: str, stats: LayerStats, channel: int, classes: Sequence[int]) -> Tensor:
    """Closed-form ARV (C_in,) float64 of ``channel`` for the images of the class set
    ``classes``; ``stats`` must be captured at ``layer``. Only for layers where
    :func:`closed_form_exact` holds; use :func:`arv_by_gradient` (or :func:`concept_arvs`,
    which chooses) otherwise."""
    conv = get_layer(model, layer)
    if not closed_form_exact(conv) or not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f"the closed-form ARV is exact only for a 1x1, stride-1, groups=1 Conv2d without "
            f"non-zero padding; {layer!r} is {conv!r}. Use arv_by_gradient / concept_arvs.")
    check_channel(channel, conv.out_channels, layer)
    if stats.input_sum.shape[1] != conv.in_channels:
        raise ValueError(f"stats have {stats.input_sum.shape[1]} input channels but {layer!r} "
                         f"has {conv.in_channels}: were they captured at another layer?")
    weight = conv.weight.detach()[channel, :, 0, 0].double().cpu()
    return weight * stats.input_mean(tuple(int(t) for t in classes))


class _Stop(Exception):
    pass


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _input_output(model: nn.Module, layer_in: str, layer_out: str, images: Tensor) -> tuple[Tensor, Tensor]:
    """(x, z): x = input of ``layer_in`` as a fresh leaf requiring grad, z = output of
    ``layer_out`` computed from it. The forward stops at ``layer_out``."""
    first, last = get_layer(model, layer_in), get_layer(model, layer_out)
    box: dict[str, Tensor] = {}

    def pre_hook(_module, args):
        if "x" in box:
            raise ValueError(f"layer {layer_in!r} is called more than once before {layer_out!r}; "
                             f"name a module that runs once per forward (e.g. a conv or a block)")
        box["x"] = args[0].detach().requires_grad_(True)
        return (box["x"],) + tuple(args[1:])

    def hook(_module, _args, output):
        if "x" in box:  # a layer_out call before layer_in is not part of the span
            box["z"] = output
            raise _Stop

    handles = [first.register_forward_pre_hook(pre_hook), last.register_forward_hook(hook)]
    try:
        with torch.enable_grad():
            model(images)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if "z" not in box:
        raise RuntimeError(f"no forward path from the input of {layer_in!r} to the output of {layer_out!r}")
    return box["x"], box["z"]


def arv_by_gradient(
    model: nn.Module,
    layer_in: str,
    layer_out: str,
    dataset: ImageDataset,
    indices: Sequence[int] | Tensor,
    channels: Sequence[int],
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> Tensor:
    """ARVs (len(channels), C_in) float64 by real gradients, for any span from the INPUT
    of ``layer_in`` to the OUTPUT of ``layer_out`` (the same name for one layer).

    Row i is the mean over ``dataset[indices]`` of ``sum_hw x_j * d(sum_hw z_c)/d x_j`` with
    ``c = channels[i]``. One forward per image batch; the backward is batched over channel
    chunks (``is_grads_batched``); model in eval mode (so images are independent).
    """
    idx = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
    channels = [int(c) for c in channels]
    if not idx:
        raise ValueError("arv_by_gradient needs at least one image index")
    if not channels:
        raise ValueError("arv_by_gradient needs at least one channel")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    total: Tensor | None = None
    with eval_mode(model), frozen_parameters(model):
        for start in range(0, len(idx), batch_size):
            images = dataset.images(idx[start:start + batch_size]).to(device)
            x, z = _input_output(model, layer_in, layer_out, images)
            summed = z.reshape(z.shape[0], z.shape[1], -1).sum(-1)  # (B, C_out)
            for c in channels:
                check_channel(c, summed.shape[1], layer_out)
            part = _batched_input_x_gradient(x, summed, channels)
            total = part if total is None else total + part
    assert total is not None
    return total / len(idx)


def _batched_input_x_gradient(x: Tensor, summed_bc: Tensor, channels: list[int]) -> Tensor:
    """sum over the batch of sum_hw x * d summed[:, c] / dx, for each c: (len(channels), C_in)."""
    chunk = max(1, _MAX_BATCHED_ELEMENTS // max(1, x.numel()))
    out = []
    for start in range(0, len(channels), chunk):
        chans = channels[start:start + chunk]
        cot = torch.zeros((len(chans),) + tuple(summed_bc.shape), dtype=summed_bc.dtype, device=summed_bc.device)
        cot[torch.arange(len(chans)), :, torch.as_tensor(chans)] = 1.0
        last = start + chunk >= len(channels)
        (grad,) = torch.autograd.grad(summed_bc, x, grad_outputs=cot, is_grads_batched=True,
                                      retain_graph=not last)
        prod = (grad.double() * x.detach().double().unsqueeze(0))  # (m, B, C_in, ...)
        out.append(prod.reshape(prod.shape[0], prod.shape[1], prod.shape[2], -1).sum((1, 3)).cpu())
    return torch.cat(out, 0)


def concept_arvs(
    model: nn.Module,
    layer: str,
    dataset: ImageDataset,
    channel: int,
    concepts: Sequence[Sequence[int]],
    stats: LayerStats | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, str]:
    """ARVs (k, C_in) of ``channel`` at ``layer`` for each concept (a class set: its ARV is
    the mean over ALL its images in ``dataset``), and the path used: ``"closed_form"``
    (exact 1x1 linear conv and ``stats`` of ``dataset`` given) or ``"gradient"``."""
    for i, concept in enumerate(concepts):
        if len(dataset.indices_of(list(concept))) == 0:
            raise ValueError(f"concept {i} (classes {tuple(concept)}) has no images in the dataset")
    if stats is not None and closed_form_exact(get_layer(model, layer)):
        return torch.stack([arv(model, layer, stats, channel, c) for c in concepts]), "closed_form"
    rows = [arv_by_gradient(model, layer, layer, dataset, dataset.indices_of(list(c)), [channel],
                            batch_size, device)[0] for c in concepts]
    return torch.stack(rows), "gradient"


def arv_cosine(a1: Tensor, a2: Tensor) -> float:
    """Cosine similarity of two ARVs (the gamma rule: polysemantic iff cosine < gamma)."""
    a1, a2 = a1.detach().double().flatten(), a2.detach().double().flatten()
    if a1.shape != a2.shape:
        raise ValueError(f"ARVs differ in length: {a1.numel()} vs {a2.numel()}")
    n1, n2 = a1.norm(), a2.norm()
    if n1 == 0 or n2 == 0:
        raise ValueError("cosine of an all-zero ARV is undefined (the channel gets no input attribution)")
    return float(a1 @ a2 / (n1 * n2))


def candidate_pairs(stats: LayerStats, p: float = 0.75) -> list[tuple[int, int, int]]:
    """(channel, class_a, class_b) with class_a < class_b for every channel relevant to >= 2
    classes (Hesse et al. step 1), every class pair of it; sorted by channel."""
    relevant = stats.relevant_classes(p)  # (T, C)
    out: list[tuple[int, int, int]] = []
    for c in range(relevant.shape[1]):
        classes = relevant[:, c].nonzero().flatten().tolist()
        out.extend((c, a, b) for a, b in itertools.combinations(classes, 2))
    return out


@dataclass(frozen=True)
class PairRecord:
    """One tested (channel, class pair): ARV cosine and the gamma decision."""

    channel: int
    class_a: int
    class_b: int
    cosine: float
    polysemantic: bool


def detect_polysemantic_pairs(
    model: nn.Module,
    layer: str,
    stats: LayerStats,
    p: float = 0.75,
    gamma: float = 0.5,
    dataset: ImageDataset | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> list[PairRecord]:
    """Every candidate pair with its ARV cosine and ``polysemantic = cosine < gamma``.

    Closed-form ARVs where exact; otherwise ``dataset`` (the one ``stats`` were captured on)
    is required and the ARVs are computed by gradient, one pass per class batched over the
    channels that need it. Pairs where an ARV is all zero (cosine undefined) are left out.
    """
    pairs = candidate_pairs(stats, p)
    needed: dict[int, set[int]] = {}  # class -> channels
    for c, a, b in pairs:
        needed.setdefault(a, set()).add(c)
        needed.setdefault(b, set()).add(c)
    arvs: dict[tuple[int, int], Tensor] = {}
    if closed_form_exact(get_layer(model, layer)):
        for t, chans in needed.items():
            for c in chans:
                arvs[c, t] = arv(model, layer, stats, c, (t,))
    else:
        if dataset is None:
            raise ValueError(f"{layer!r} is not a linear 1x1 conv: pass the dataset the stats "
                             f"were captured on so ARVs can be computed by gradient")
        for t, chans in sorted(needed.items()):
            chans_sorted = sorted(chans)
            rows = arv_by_gradient(model, layer, layer, dataset, dataset.indices_of([t]), chans_sorted,
                                   batch_size, device)
            arvs.update({(c, t): rows[i] for i, c in enumerate(chans_sorted)})
    records = []
    for c, a, b in pairs:
        u, v = arvs[c, a], arvs[c, b]
        if u.norm() == 0 or v.norm() == 0:
            continue
        cos = arv_cosine(u, v)
        records.append(PairRecord(c, a, b, cos, cos < gamma))
    return records
