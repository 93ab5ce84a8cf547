"""Planted polysemantic channels with known ground truth (works on any conv layer).

Planting merges two channels ``a`` and ``b`` of a ``Conv2d`` layer that are each selective
for a different (unrelated) class into slot ``a`` of a COPY of the model:
``W'[a] = W[a] + W[b]``, ``bias'[a] = bias[a] + bias[b]`` and channel ``b`` is silenced. The
planted channel is then exactly ``part_a + part_b`` where ``part_i`` is the original conv
filter ``i`` applied to the layer input, which :class:`benchmark.core.types.PlantedTruth`
recomputes for any input. The network downstream reads the sum where it read ``a``, so
accuracy changes; :func:`accuracy` measures by how much.

Class selectivity (used to choose channels): with mu_t the mean spatially summed output of
a channel over the images of class t (from the capture statistics), the selectivity of the
channel for its top class t* is ``(mu_t* - mean_{t != t*} mu_t) / (|mu_t*| + |mean_{t != t*} mu_t| + eps)``
(the class selectivity index of Morcos et al. 2018, made sign-safe for pre-BN outputs);
1 means the channel responds to one class only.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from benchmark.core.types import PlantedTruth
from benchmark.engine.layer_stats import LayerStats
from benchmark.engine.layers import check_channel, get_layer, layer_activations
from benchmark.sources.datasets import ImageDataset


@dataclass(frozen=True)
class ChannelSelectivity:
    channel: int
    top_class: int
    selectivity: float


def class_selectivity(stats: LayerStats, eps: float = 1e-8) -> list[ChannelSelectivity]:
    """Selectivity of every output channel for its top class (see module docstring)."""
    present = stats.class_counts > 0
    if present.sum() < 2:
        raise ValueError("class selectivity needs images of at least two classes")
    means = stats.output_sum[present] / stats.class_counts[present, None]  # (T', C)
    class_ids = present.nonzero().flatten()
    out = []
    for c in range(means.shape[1]):
        col = means[:, c]
        top = int(torch.argmax(col))
        rest = torch.cat([col[:top], col[top + 1:]]).mean()
        s = (col[top] - rest) / (col[top].abs() + rest.abs() + eps)
        out.append(ChannelSelectivity(c, int(class_ids[top]), float(s)))
    return out


def choose_channel_pairs(
    stats: LayerStats,
    num_pairs: int,
    unrelated: Callable[[int, int], bool] | None = None,
    min_selectivity: float = 0.0,
    max_profile_correlation: float = 0.5,
    allow_fewer: bool = False,
) -> list[tuple[int, int]]:
    """Greedily pair the most selective channels whose top classes are unrelated.

    With ``allow_fewer`` the pairs that exist are returned when there are fewer than
    ``num_pairs`` (the planted track asks for candidates); otherwise that is an error.

    Every chosen channel and every top class is used once. ``unrelated(t1, t2)`` defaults to
    ``t1 != t2``; pass a WordNet- or group-based rule for real use. The two channels' class
    profiles (class-mean outputs) must correlate below ``max_profile_correlation`` (Pearson
    over classes), so the planted parts are distinguishable signals, not one signal twice.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    unrelated = unrelated or (lambda t1, t2: t1 != t2)
    present = stats.class_counts > 0
    profiles = (stats.output_sum[present] / stats.class_counts[present, None]).T  # (C, T')
    profile_corr = torch.corrcoef(profiles).nan_to_num(1.0)

    def compatible(a: ChannelSelectivity, b: ChannelSelectivity) -> bool:
        return unrelated(a.top_class, b.top_class) and profile_corr[a.channel, b.channel] < max_profile_correlation

    ranked = sorted(class_selectivity(stats), key=lambda s: (-s.selectivity, s.channel))
    ranked = [s for s in ranked if s.selectivity >= min_selectivity]
    # best channel per class, so each part stands for one class
    best: dict[int, ChannelSelectivity] = {}
    for s in ranked:
        best.setdefault(s.top_class, s)
    pool = sorted(best.values(), key=lambda s: (-s.selectivity, s.channel))
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for i, first in enumerate(pool):
        if first.channel in used:
            continue
        for second in pool[i + 1:]:
            if second.channel not in used and compatible(first, second):
                pairs.append((first.channel, second.channel))
                used.update((first.channel, second.channel))
                break
        if len(pairs) == num_pairs:
            return pairs
    if allow_fewer:
        return pairs
    raise ValueError(
        f"only {len(pairs)} of {num_pairs} channel pairs with selectivity >= {min_selectivity}, "
        f"unrelated top classes and profile correlation < {max_profile_correlation} exist in this layer")


def merged_margin(profiles_ct: Tensor, a: int, b: int, class_a: int, class_b: int) -> float:
    """How clearly the merged channel a + b prefers its two classes: with m = mu_a + mu_b its
    class-mean profile (exact: the merged channel is the sum of the two),
    ``(min(m[class_a], m[class_b]) - max_{t not in both} m[t]) / (max m - min m)``; > 0 iff the
    two classes are the merged channel's two strongest."""
    m = profiles_ct[a] + profiles_ct[b]
    rest = torch.ones_like(m, dtype=torch.bool)
    rest[[class_a, class_b]] = False
    spread = float(m.max() - m.min())
    if spread == 0.0 or not rest.any():
        return float("-inf")
    return float(torch.minimum(m[class_a], m[class_b]) - m[rest].max()) / spread


def choose_planting_pairs(
    stats: LayerStats,
    num_pairs: int,
    unrelated: Callable[[int, int], bool] | None = None,
    min_margin: float = 0.0,
    max_profile_correlation: float = 0.5,
    min_relevance: float = 0.0,
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Up to ``num_pairs`` candidate plantings ``((a, b), (class_a, class_b))``, best first.

    Every pair of channels whose top classes (:func:`class_selectivity`) are unrelated and
    whose class profiles correlate below ``max_profile_correlation`` is scored by
    :func:`merged_margin`; pairs with margin > ``min_margin`` are taken greedily by margin
    (ties: smaller channels), each channel and each class once. Only fit statistics are read.

    ``min_relevance`` > 0 keeps only channels that already carry their top class's decision:
    the share of that class's fit images on which the channel is important (ARV's relevance
    filter, the capture's ``importance_counts`` at its tau) must be at least ``min_relevance``.
    On a real network the most selective channels are rarely relevant (on EfficientNet-Lite's
    layers the activation-chosen candidates had shares 0.00-0.42), and the validity filter
    asks for relevance on held-out images.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    if not 0.0 <= min_relevance <= 1.0:
        raise ValueError(f"min_relevance must be in [0, 1], got {min_relevance}")
    if min_relevance > 0 and stats.importance_counts is None:
        raise ValueError("min_relevance needs statistics captured with importance counters (capture tau set)")
    unrelated = unrelated or (lambda t1, t2: t1 != t2)
    present = stats.class_counts > 0
    if present.sum() < 3:
        raise ValueError("choosing planting pairs needs images of at least three classes")
    profiles = torch.full((stats.num_channels, stats.num_classes), float("nan"), dtype=torch.float64)
    profiles[:, present] = (stats.output_sum[present] / stats.class_counts[present, None]).T
    profiles = profiles[:, present]
    class_ids = present.nonzero().flatten().tolist()
    corr = torch.corrcoef(profiles).nan_to_num(1.0)
    selectivity = class_selectivity(stats)
    top = {s.channel: class_ids.index(s.top_class) for s in selectivity}
    relevant = torch.ones(stats.num_channels, dtype=torch.bool)
    if min_relevance > 0:
        carries = stats.relevant_classes(min_relevance)  # (T, C): important for >= that share of the class
        relevant = torch.tensor([bool(carries[s.top_class, s.channel]) for s in selectivity])
    scored = []
    if len(class_ids) > 2:  # a margin needs a class outside the pair
        top_c = torch.tensor([top[c] for c in range(stats.num_channels)])
        is_unrelated = functools.lru_cache(maxsize=None)(unrelated)  # WordNet once per class pair
        for a in range(stats.num_channels - 1):
            # every b > a at once: same candidates and margins as merged_margin(profiles, a, b, ...)
            bs = torch.arange(a + 1, stats.num_channels)
            ta = int(top_c[a])
            if not relevant[a]:
                continue
            keep = (top_c[bs] != ta) & (corr[a, bs] < max_profile_correlation) & relevant[bs]
            bs, tbs = bs[keep], top_c[bs][keep]
            if not len(bs):
                continue
            merged = profiles[a][None, :] + profiles[bs]
            rows = torch.arange(len(bs))
            low = torch.minimum(merged[:, ta], merged[rows, tbs])
            spread = merged.max(1).values - merged.min(1).values
            rest = merged.clone()
            rest[:, ta] = float("-inf")
            rest[rows, tbs] = float("-inf")
            margin = torch.where(spread > 0, (low - rest.max(1).values) / spread, float("-inf"))
            good = margin > min_margin
            for b, tb, m in zip(bs[good].tolist(), tbs[good].tolist(), margin[good].tolist()):
                if is_unrelated(class_ids[ta], class_ids[tb]):
                    scored.append((-m, a, b, ta, tb))
    chosen, used, used_classes = [], set(), set()
    for _, a, b, ta, tb in sorted(scored):
        if {a, b} & used or {ta, tb} & used_classes:
            continue
        chosen.append(((a, b), (class_ids[ta], class_ids[tb])))
        used |= {a, b}
        used_classes |= {ta, tb}
        if len(chosen) == num_pairs:
            break
    return chosen


def choose_within_class_pairs(
    stats: LayerStats,
    num_pairs: int,
    exclude: Iterable[int] = (),
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Up to ``num_pairs`` WITHIN-class candidate plantings ``((a, b), (c, c))``: two channels
    whose top class (:func:`class_selectivity`) is the same class c, so both parts serve the
    same concept and a gate by the class label cannot tell their images apart.

    Per class, the pair of its selective channels (selectivity > 0, not in ``exclude``) whose
    top references (the capture's top-``k`` images by maximum activation) overlap least is
    its candidate (they respond to different images of c: the planted truth then splits the
    class); classes are taken by that overlap, lowest first (ties: higher selectivity of the
    weaker channel, then smaller channels), each channel and class once. Fit statistics only.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    excluded = set(int(c) for c in exclude)
    by_class: dict[int, list[ChannelSelectivity]] = {}
    for s in class_selectivity(stats):
        if s.selectivity > 0 and s.channel not in excluded:
            by_class.setdefault(s.top_class, []).append(s)
    refs = stats.top_max_ids
    scored = []
    for c, members in sorted(by_class.items()):
        best = None
        for i, sa in enumerate(members):
            for sb in members[i + 1:]:
                a, b = sorted((sa.channel, sb.channel))
                overlap = len(set(refs[a].tolist()) & set(refs[b].tolist())) / max(1, refs.shape[1])
                key = (overlap, -min(sa.selectivity, sb.selectivity), a, b)
                best = key if best is None or key < best else best
        if best is not None:
            scored.append((*best, c))
    chosen: list[tuple[tuple[int, int], tuple[int, int]]] = []
    used: set[int] = set()
    for _, _, a, b, c in sorted(scored):
        if {a, b} & used:
            continue
        chosen.append(((a, b), (c, c)))
        used |= {a, b}
        if len(chosen) == num_pairs:
            break
    return chosen


def _conv_part(conv: nn.Conv2d, weight: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, 1)


def plant(
    model: nn.Module,
    layer: str,
    pairs: Sequence[tuple[int, int]],
    classes: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
    offsets: Sequence[float] | Tensor | None = None,
) -> tuple[nn.Module, dict[int, PlantedTruth]]:
    """A planted COPY of ``model`` and the ground truth of each planted channel.

    ``pairs`` are (kept slot a, merged channel b); ``classes[i]`` optionally names the class
    sets the two parts serve (e.g. their top classes).

    ``offsets`` (one value per output channel) centres the parts: part i becomes
    ``filter_i(x) + bias_i - offsets[i]`` and the planted channel their sum (a bias-free conv
    gets a bias, zero on every other channel). With ``offsets`` = each channel's mean response
    per position (:func:`mean_responses`) a part is positive where its channel responds above
    its average, so a pre-batch-norm channel, whose raw sign says little, is "active" on a
    concept exactly when it responds to it more than to the average image.
    """
    conv = get_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"planting needs a Conv2d layer; {layer!r} is a {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"planting supports groups=1 convolutions; {layer!r} has groups={conv.groups}")
    flat = [c for pair in pairs for c in pair]
    for c in flat:
        check_channel(c, conv.out_channels, layer)
    if len(set(flat)) != len(flat):
        raise ValueError(f"each channel may appear in one planted pair only: {list(pairs)}")
    if classes is not None and len(classes) != len(pairs):
        raise ValueError(f"got {len(classes)} class assignments for {len(pairs)} pairs")

    planted = copy.deepcopy(model).eval()
    new_conv = get_layer(planted, layer)
    original_w = conv.weight.detach().clone()
    original_b = None if conv.bias is None else conv.bias.detach().clone()
    if offsets is not None:
        offsets = torch.as_tensor(offsets, dtype=original_w.dtype).flatten()
        if offsets.numel() != conv.out_channels:
            raise ValueError(f"offsets needs one value per output channel ({conv.out_channels}), got {offsets.numel()}")
        base_b = torch.zeros(conv.out_channels, dtype=original_w.dtype) if original_b is None else original_b
        original_b = base_b - offsets
        if new_conv.bias is None:
            new_conv.bias = nn.Parameter(torch.zeros_like(base_b))
    truths: dict[int, PlantedTruth] = {}
    with torch.no_grad():
        for i, (a, b) in enumerate(pairs):
            new_conv.weight[a] = original_w[a] + original_w[b]
            new_conv.weight[b] = 0.0
            if new_conv.bias is not None:
                new_conv.bias[a] = original_b[a] + original_b[b]
                new_conv.bias[b] = 0.0
            cls = classes[i] if classes is not None else ((), ())
            truths[a] = PlantedTruth(
                layer=layer, channel=a, source_channels=(a, b),
                classes=(tuple(int(t) for t in cls[0]), tuple(int(t) for t in cls[1])),
                parts_fn=_make_parts_fn(planted, layer, new_conv, original_w, original_b, a, b),
                part_filters=original_w[[a, b]].clone(),
            )
    return planted, truths


def _make_parts_fn(planted, layer, conv, weight, bias, a, b) -> Callable[[Tensor], Tensor]:
    w = weight[[a, b]]
    bias_ab = None if bias is None else bias[[a, b]]

    def parts(images: Tensor) -> Tensor:
        x = layer_activations(planted, layer, images, side="input")
        return _conv_part(conv, w.to(x.device), None if bias_ab is None else bias_ab.to(x.device), x)

    return parts


@torch.no_grad()
def mean_responses(model: nn.Module, layer: str, stats: LayerStats, example: Tensor) -> Tensor:
    """(C,) mean response per position of every channel over the captured images:
    the spatially summed class sums of ``stats`` divided by images and by H x W (read from
    one forward of ``example``)."""
    h, w = layer_activations(model, layer, example[:1]).shape[-2:]
    total = stats.output_sum.sum(0) / stats.class_counts.sum()
    return (total / (h * w)).float()


@torch.no_grad()
def accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 256, device: str = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (eval mode)."""
    if len(dataset) == 0:
        raise ValueError("cannot measure accuracy on an empty dataset")
    correct = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
    return correct / len(dataset)
