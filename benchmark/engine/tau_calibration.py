"""Calibrating the ARV candidate rule (importance threshold tau, class share p) for a layer on
the FIT split.

Hesse et al. (2025, step 1) call channel c important for image n when its attribution
``A_c(n) = sum_hw z_c * d y_t / d z_c`` (Input x Gradient w.r.t. the true-class logit) holds
at least ``tau`` of the image's positive attribution ``S(n) = sum_c' max(A_c'(n), 0)``, with
tau = 0.03 on ResNet-50's ``layer4.2.conv3``. The share a channel can hold depends on how
widely a layer spreads its relevance: on EfficientNet-Lite0's ``_conv_head`` (1280 channels)
tau = 0.03 marks 0.08 channels per image as important, so the rule detects nothing there.

Deviation from the paper (opt-in, ``capture.important_per_image = m``): tau is chosen per
(model, layer) so that, on an even spread of fit images, the mean number of important
channels per image is m: tau is the ``round(m * N)``-th largest relative attribution
``A_c(n) / S(n)`` over the N calibration images and all channels. Only fit images are read,
never the held-out images the metrics score on. Images with ``S(n) = 0`` are left out.

The second half of the rule, "relevant to class t iff important for at least p = 0.75 of t's
images", fails on real photos for another reason: a photo category is visually diverse, and
on the real track's layers no channel is important for more than 44-67% (median over the
categories, at 10 important channels per image) of a category's fit images, so p = 0.75
leaves 0.06-0.44 relevant channels per category where the synthetic world's layers have
5.8-10.7. Deviation (opt-in, ``capture.relevant_per_class = r``): p is the ``round(r * T)``-th
largest share ``importance_counts[t, c] / class_counts[t]`` over the T present classes and
all channels (:func:`calibrate_p`), so that on average r channels are relevant per class;
computed from the fit statistics only.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.engine.layers import eval_mode, frozen_parameters, get_layer


def relative_attributions(model: nn.Module, layer: str, images: Tensor, labels: Tensor) -> Tensor:
    """(N, C) ``A_c(n) / S(n)`` for a batch (NaN rows where ``S(n) = 0``)."""
    box: dict[str, Tensor] = {}

    def hook(_module, _args, output):
        box["z"] = output.detach().requires_grad_(True)  # the graph starts at the layer output
        return box["z"]

    handle = get_layer(model, layer).register_forward_hook(hook)
    try:
        with eval_mode(model), frozen_parameters(model), torch.enable_grad():
            logits = model(images)
            (grad,) = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), box["z"])
    finally:
        handle.remove()
    a = (box["z"].detach().double() * grad.double()).flatten(2).sum(-1)
    total = a.clamp(min=0).sum(1, keepdim=True)
    return torch.where(total > 0, a / total.clamp(min=1e-300), torch.full_like(a, float("nan")))


def tau_for(shares_nc: Tensor, important_per_image: float) -> float:
    """The tau under which the mean count of ``shares >= tau`` per (valid) row is
    ``important_per_image`` (rounded to whole entries; ties counted as important)."""
    valid = shares_nc[~torch.isnan(shares_nc).any(1)]
    if valid.shape[0] == 0:
        raise ValueError(f"tau calibration: none of the {shares_nc.shape[0]} calibration images has a finite, positive "
                         "summed attribution at this layer (check the model's weights)")
    if not 0 < important_per_image <= valid.shape[1]:
        raise ValueError(f"important_per_image must be in (0, {valid.shape[1]}] (the layer's channels), "
                         f"got {important_per_image}")
    rank = max(1, round(important_per_image * valid.shape[0]))
    return float(torch.topk(valid.flatten(), rank).values[-1].clamp(min=0.0, max=1.0))


def calibrate_tau(model: nn.Module, layer: str, dataset, important_per_image: float, images: int = 256,
                  batch_size: int = 64, device: torch.device | str = "cpu") -> dict[str, float]:
    """tau for ``layer`` from an even spread of ``images`` images of ``dataset`` (the fit
    split): ``{"tau", "important_per_image", "images", "important_at_paper_tau"}`` (the last:
    the mean count per image under the paper's tau = 0.03, for the record)."""
    n = len(dataset)
    ids = torch.linspace(0, n - 1, min(images, n)).round().long().unique()
    shares = []
    for start in range(0, ids.numel(), batch_size):
        chunk = ids[start:start + batch_size]
        shares.append(relative_attributions(model, layer, dataset.images(chunk).to(device),
                                            dataset.labels[chunk].to(device)).cpu())
    table = torch.cat(shares)
    tau = tau_for(table, important_per_image)
    valid = table[~torch.isnan(table).any(1)]
    return {"tau": tau, "important_per_image": float(important_per_image), "images": int(valid.shape[0]),
            "important_at_paper_tau": float((valid >= 0.03).sum(1).double().mean())}


def calibrate_p(stats, relevant_per_class: float) -> float:
    """p under which on average ``relevant_per_class`` channels are relevant per class of the
    fit statistics ``stats`` (ties counted as relevant); at most 1."""
    if stats.importance_counts is None:
        raise ValueError("p calibration needs statistics captured with importance counters (tau set)")
    present = stats.class_counts > 0
    shares = stats.importance_counts[present].double() / stats.class_counts[present, None].double()
    if not 0 < relevant_per_class <= shares.shape[1]:
        raise ValueError(f"relevant_per_class must be in (0, {shares.shape[1]}] (the layer's channels), "
                         f"got {relevant_per_class}")
    rank = max(1, round(relevant_per_class * shares.shape[0]))
    value = float(torch.topk(shares.flatten(), rank).values[-1])
    if value <= 0.0:
        raise ValueError(f"p calibration: fewer than {rank} (class, channel) shares are positive at this layer")
    return min(1.0, value)
