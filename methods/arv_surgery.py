"""ARV weight surgery (Hesse, Fischer, Schaub-Meyer, Roth, CVPR-W 2025, arXiv 2504.12939).

Splits channel c of a Conv2d layer between k >= 2 given concepts (class sets): ARVs of the
concepts (:mod:`benchmark.engine.relevance`, step 2) assign each input channel to one concept or to
the shared set, and the conv is rewritten so that virtual neuron d_i keeps its concept's and
the shared input weights; ``z_c = sum_i d_i - (k-1) * res`` exactly, so the rewritten model
has the original logits (:mod:`methods._surgery`, step 3). rho is tuned on the reference's
grid with its objective unless given, on every fit image of the concepts (as the reference),
in closed form from one pass up to the layer input (:class:`methods._surgery.GridEvaluator`),
which also ranks the reference images; the split's virtual neurons and residual share one
forward of the rewritten layer per image.

Follows the authors' code (disentangle_channel.py, get_cosine_similarities.py), with these
differences: any Conv2d (kernel, stride, padding, dilation, bias; the reference hard-codes a
1x1 conv without bias), k >= 2 concepts in one pass, concepts that are class SETS (the
reference asserts one class per concept), ARVs in float64 (the reference averages float16
vectors), ``max_tune_images`` may cap the fit images per concept used for tuning (seeded
random; default None = all, as in the reference), and an arithmetic merge instead of a dense 1x1 merge conv
(same linear map; see :mod:`methods._surgery`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from benchmark.engine.layers import check_channel, get_layer, layer_activations
from benchmark.engine.relevance import arv_cosine, concept_arvs
from methods._surgery import RHO_GRID, SHARED, DisentangledConv, GridEvaluator, disentangle_model, surgery_fns

NAME = "arv_surgery"


@METHODS.register(NAME)
@dataclass(frozen=True)
class ARVSurgery(Method):
    """Weight surgery guided by attribution relevance vectors (Hesse et al. 2025).

    Attributes:
        tau: attribution share making a channel important for an image (candidate
            selection, step 1; the statistics are captured with it).
        p: share of a class's images for which the channel must be important.
        gamma: a pair is polysemantic iff its ARV cosine < gamma (detection tracks).
        rho: surgery threshold; None tunes it on the reference grid 0.05..1.00.
        max_tune_images: fit images per concept used to tune rho (None: all).
        num_references: reference images per virtual neuron (None: the stats' top_k).
    """

    role: ClassVar[str] = "method"
    citation: ClassVar[str] = "Hesse et al. 2025"

    requires: ClassVar[frozenset[str]] = frozenset({"concepts"})  # does not apply without it

    tau: float = 0.03
    p: float = 0.75
    gamma: float = 0.5
    rho: float | None = None
    max_tune_images: int | None = None
    num_references: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {self.p}")
        if not -1.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma is a cosine threshold in [-1, 1], got {self.gamma}")
        if self.rho is not None and not self.rho > 0:
            raise ValueError(f"rho must be > 0 or None (tune on {RHO_GRID[0]}..{RHO_GRID[-1]}), got {self.rho}")
        if self.max_tune_images is not None and self.max_tune_images < 1:
            raise ValueError(f"max_tune_images must be >= 1 or None, got {self.max_tune_images}")
        if self.num_references is not None and self.num_references < 1:
            raise ValueError(f"num_references must be >= 1 or None, got {self.num_references}")

    # ------------------------------------------------------------------ detection
    def polysemanticity(self, context: Context, channel: int, concept_a, concept_b) -> float:
        """Cosine of the two concepts' ARVs at ``context.layer`` (low = polysemantic; compare
        with gamma). Closed form for a linear 1x1 conv, real gradients for any other layer."""
        concepts = (_as_concept(concept_a), _as_concept(concept_b))
        arvs, _ = concept_arvs(context.model, context.layer, context.fit, channel, concepts,
                               context.stats, context.batch_size, context.device)
        try:
            return arv_cosine(arvs[0], arvs[1])
        except ValueError as err:
            raise NotApplicable(f"{NAME}: channel {channel}: {err}") from None

    # ------------------------------------------------------------------ surgery
    def fit(self, context: Context, target: Target) -> Split:
        concepts = _check_target(context, target)
        conv = _conv_layer(context, target.layer)
        check_channel(target.channel, conv.out_channels, target.layer)
        k = len(concepts)
        arvs, path = concept_arvs(context.model, target.layer, context.fit, target.channel, concepts,
                                  context.stats, context.batch_size, context.device)
        info: dict = {"arv_path": path}
        all_ids = [context.fit.indices_of(list(c)).tolist() for c in concepts]
        if self.rho is None:
            tune_ids = [self._tune_ids(ids, context.seed, i) for i, ids in enumerate(all_ids)]
            tuner = _evaluate(context, conv, target, arvs, tune_ids, RHO_GRID)
            rho, scores = tuner.best()
            info["objective"] = scores
        else:
            rho, tune_ids, tuner = float(self.rho), None, None
        if tune_ids != all_ids:  # references are ranked over ALL fit images of each concept
            tuner = _evaluate(context, conv, target, arvs, all_ids, (rho,))
        assert tuner is not None  # evaluated above whenever rho was given or tuned
        owner = tuner.owner(rho)
        model = disentangle_model(context.model, target.layer, target.channel, owner, k)
        module = model.get_submodule(target.layer)
        assert isinstance(module, DisentangledConv)
        virtual_fn, residual_fn = surgery_fns(model, target.layer, module)
        info.update(
            rho=rho, shared=int((owner == SHARED).sum()),
            sizes=tuple(int((owner == i).sum()) for i in range(k)),
            cosines=tuple(_safe_cosine(arvs[i], arvs[j]) for i in range(k) for j in range(i + 1, k)),
        )
        n_ref = self.num_references or int(context.stats.top_max_ids.shape[1])
        refs = tuple(_references(tuner.peak(i, rho), ids, n_ref) for i, ids in enumerate(all_ids))
        return Split(target=target, method=NAME, k=k, recomposition="surgery", virtual_fn=virtual_fn,
                     residual_fn=residual_fn, reference_ids=refs, concepts=concepts, model=model, info=info)

    def _tune_ids(self, ids: list[int], seed: int, i: int) -> list[int]:
        """At most ``max_tune_images`` of ``ids`` (ascending), seeded random."""
        n = self.max_tune_images
        if n is None or len(ids) <= n:
            return ids
        g = torch.Generator().manual_seed(seed * 1009 + i)
        return sorted(ids[j] for j in torch.randperm(len(ids), generator=g)[:n].tolist())


def _evaluate(context: Context, conv: nn.Conv2d, target: Target, arvs: Tensor, ids: Sequence[Sequence[int]],
              grid: Sequence[float]) -> GridEvaluator:
    """One no-grad pass over the fit images ``ids[i]`` of each concept, up to the layer input
    only; every rho of ``grid`` is evaluated from those maps (:class:`GridEvaluator`)."""
    tuner = GridEvaluator(conv, target.channel, arvs, grid)
    with torch.no_grad():
        for i, concept_ids in enumerate(ids):
            for start in range(0, len(concept_ids), context.batch_size):
                images = context.fit.images(concept_ids[start:start + context.batch_size]).to(context.device)
                tuner.add(i, layer_activations(context.model, target.layer, images, side="input"))
    return tuner


def _references(peaks: Tensor, ids: list[int], n_ref: int) -> tuple[int, ...]:
    """The ``n_ref`` images of ``ids`` (ascending) with the largest max spatial activation of
    their virtual neuron (``peaks``, aligned with ``ids``), ties to the smaller index."""
    order = torch.argsort(-peaks, stable=True)[:n_ref]
    return tuple(ids[j] for j in order.tolist())


def _as_concept(concept) -> tuple[int, ...]:
    if isinstance(concept, int):
        return (concept,)
    out = tuple(int(t) for t in concept)
    if not out:
        raise ValueError("a concept needs at least one class")
    return out


def _safe_cosine(a: Tensor, b: Tensor) -> float | None:
    try:
        return arv_cosine(a, b)
    except ValueError:
        return None


def _check_target(context: Context, target: Target) -> tuple[tuple[int, ...], ...]:
    if target.concepts is None:
        raise NotApplicable(f"{NAME} splits a channel between given concepts (class sets); target "
                            f"{target.key} has none (the pairs and planted tracks supply them)")
    if len(target.concepts) < 2:
        raise NotApplicable(f"{NAME} needs >= 2 concepts to split between, target {target.key} "
                            f"has {len(target.concepts)}")
    if target.layer != context.layer:
        raise ValueError(f"target layer {target.layer!r} differs from the context's layer {context.layer!r} "
                         f"(the cached statistics belong to the context's layer)")
    seen: dict[int, int] = {}
    for i, concept in enumerate(target.concepts):
        for t in concept:
            if t in seen:
                raise NotApplicable(f"{NAME} splits a channel between disjoint concepts, but class {t} is in concept "
                                    f"{seen[t]} and concept {i} (a within-class target): no concept to split by")
            seen[t] = i
        if len(context.fit.indices_of(list(concept))) == 0:
            raise ValueError(f"concept {i} (classes {concept}) has no images in the fit set")
    return target.concepts


def _conv_layer(context: Context, layer: str) -> nn.Conv2d:
    conv = get_layer(context.model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise NotApplicable(f"{NAME} rewrites a Conv2d layer; {layer!r} is a {type(conv).__name__}")
    if conv.groups != 1:
        raise NotApplicable(f"{NAME} supports groups=1 convolutions; {layer!r} has groups={conv.groups}")
    return conv
