"""Recovery of a planted polysemantic channel's known parts (DESIGN.md, "planted recovery";
the planting is :mod:`benchmark.planting.merge`: channel = part_0 + part_1 exactly).

The unit is the image: on every held-out image n take the signed spatial sums ``v_j(n)`` of
the virtual neurons, ``o(n)`` of the planted channel and ``p_q(n)`` of the planted parts. A
method is asked which part an image excites, not to reproduce maps pixel by pixel (gating
methods cannot; their maps are the channel times a per-image weight).

Main columns (family-fair: any split whose virtual neurons are copies or rescalings of the
channel -- identity, duplicate -- scores exactly "no separation", the oracle scores 1):

* ``recovery`` -- the normalised gain of explaining each part by ALL virtual neurons over
  explaining it by the channel alone. With ``R2(p | X)`` the out-of-sample R^2 of an affine
  least-squares fit of p on the columns of X (two-fold cross-fitting over a seeded split of
  the images, so extra regressors cannot buy R^2 by over-fitting),

      recovery = mean_q [R2(p_q | v_1..v_k) - R2(p_q | o)] / [1 - R2(p_q | o)].

  0 = the split explains nothing the channel did not (identity, duplicate: their span is the
  channel's span; random gating: about 0, slightly below); 1 = each part is an affine
  function of the virtual neurons (the oracle); negative = the split loses what the channel
  knew (e.g. a surgery split whose virtual neurons drop shared input). Source: the
  "informativeness" of Eastwood & Williams (ICLR 2018, DCI disentanglement: how well the
  true factors are predicted from the representation), measured as the gain over the
  undivided channel so that the baseline is the channel itself.
* ``ari`` -- adjusted Rand index (``sklearn.metrics.adjusted_rand_score``) on ONE shared pool
  per target (:mod:`benchmark.engine.pool`: the planted channel's top-100 held-out images by max
  activation), every method labelling every pool image by its own virtual neurons (largest
  positive spatial sum) against the true owner (the part with the larger positive spatial
  sum, the oracle's rule). Identity and duplicate put the pool into one group: ARI 0; the
  oracle: 1. Not applicable when the truth is constant on the pool (sklearn would say 1.0).

Dropped: the previous ``explained_variance`` (raw fit, no rescaling; ranked identity above
every method) -- after an optimal per-neuron affine fit it is the squared matched
correlation, which adds nothing. Extras: ``correlation`` (mean matched Pearson of v and p
after Hungarian matching; k copies of the channel score high on it, so it is NOT a
separation score), ``r2_split_p{q}``, ``r2_channel_p{q}``, ``corr_v{j}_p{q}``,
``matched_p{q}``, ``images``, ``pool``, ``pool_groups`` (non-empty predicted groups).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from benchmark.core.plugins import Metric
from benchmark.core.registry import METRICS
from benchmark.core.types import Column, Context, NotApplicable, PlantedTruth, Split
from benchmark.engine.layers import channel_activation
from benchmark.engine.pool import pool_labels, positive_sums, reference_pool
from metrics._common import batches, spatial_sum

PARTS = 2
MEMO_SECTION, MEMO_SIZE = 'planted_parts', 4  # context.memo section: (model, held-out data, truth) -> (o, p, size)


def _channel_and_parts(context: Context, layer: str, channel: int, truth: PlantedTruth):
    """(o, p, (H, W)): held-out spatial sums of the original channel (N,) and the planted parts
    (N, 2), and the parts' map size; computed once per target (model, held-out data, truth)
    for all its methods."""
    return context.memo.get(MEMO_SECTION, (context.model, context.heldout, truth), (layer, int(channel)),
                     lambda: _sums(context, layer, channel, truth), MEMO_SIZE)


def _sums(context: Context, layer: str, channel: int, truth: PlantedTruth):
    os_, ps, size = [], [], None
    with torch.no_grad():
        for images, _ in batches(context.heldout, torch.arange(len(context.heldout)), context.batch_size, context.device):
            parts = truth.parts_fn(images)
            size = tuple(parts.shape[-2:])
            ps.append(spatial_sum(parts).double().cpu())
            os_.append(spatial_sum(channel_activation(context.model, layer, channel, images)).double().cpu())
    return torch.cat(os_).numpy(), torch.cat(ps).numpy(), size


def pearson_matrix(a_nj: np.ndarray, b_nq: np.ndarray) -> np.ndarray:
    """(J, Q) Pearson correlations between the columns of a and b; 0 for a constant column
    (clipped to [-1, 1] against round-off)."""
    a = a_nj - a_nj.mean(0)
    b = b_nq - b_nq.mean(0)
    norm = np.sqrt((a ** 2).sum(0))[:, None] * np.sqrt((b ** 2).sum(0))[None, :]
    cov = a.T @ b
    return np.clip(np.divide(cov, norm, out=np.zeros_like(cov), where=norm > 0), -1.0, 1.0)


TIE_DECIMALS = 9  # correlations equal to 1e-9 are ties: broken by the neuron's index


def match_parts(corr_jq: np.ndarray) -> dict[int, int]:
    """part q -> virtual neuron j maximising the total matched correlation.

    The correlations are rounded to :data:`TIE_DECIMALS` decimals first, so identical
    virtual neurons (e.g. the k copies of ``duplicate``) are matched the same way on every
    machine (the solver then breaks the exact tie by index) rather than by float round-off."""
    rows, cols = linear_sum_assignment(np.round(corr_jq, TIE_DECIMALS), maximize=True)
    return {int(q): int(j) for j, q in zip(rows, cols)}


def crossfit_r2(x_nd: np.ndarray, y_n: np.ndarray, folds: np.ndarray) -> float:
    """Out-of-sample R^2 of an affine least-squares fit of y on the columns of x, two-fold
    cross-fitted (fit on one fold, predict the other; R^2 against the overall mean of y).
    Collinear columns are handled by the minimum-norm solution, so duplicated columns give
    exactly the predictions of one."""
    y = y_n.astype(np.float64)
    sst = float(((y - y.mean()) ** 2).sum())
    if sst == 0.0:
        raise ValueError("R^2 of a constant target is undefined")
    design = np.column_stack([np.ones(len(y)), x_nd.astype(np.float64)])
    scale = np.abs(design).max(0)
    design = design / np.where(scale > 0, scale, 1.0)
    pred = np.empty_like(y)
    for f in (0, 1):
        train, test = folds != f, folds == f
        coef, *_ = np.linalg.lstsq(design[train], y[train], rcond=1e-10)
        pred[test] = design[test] @ coef
    return 1.0 - float(((y - pred) ** 2).sum()) / sst


@METRICS.register("planted_recovery")
@dataclass(frozen=True)
class PlantedRecovery(Metric):
    """Recovery of a planted channel's parts: cross-fitted gain over the channel, shared-pool ARI.

    Attributes:
        pool_size: images of the shared reference pool (PURE's n_ref = 100).
        seed: seed of the two-fold split of the held-out images.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"planted_truth"})  # does not apply without it

    pool_size: int = 100
    seed: int = 0

    columns: ClassVar[tuple[Column, ...]] = (
        Column("recovery", True, (None, 1.0)),
        Column("ari", True, (-0.5, 1.0), optional=True),  # absent: constant truth on the pool
    )
    scope: ClassVar[str] = "split"
    # columns that claim to measure disentanglement (tests/metrics/test_metric_sanity.py checks them)
    calibrated_columns: ClassVar[tuple[str, ...]] = ("recovery", "ari")
    scale_invariant: ClassVar[tuple[str, ...]] = ("recovery", "ari")  # affine fits; argmax labels
    truth_column: ClassVar[str] = "recovery"  # the yardstick of benchmark.evaluation.meta_evaluation
    questions: ClassVar[Mapping[str, str]] = {"assignment": "ari", "decomposition": "recovery"}
    titles: ClassVar[Mapping[str, str]] = {"ari": "Assignment ARI", "recovery": "Decomposition recovery",
                                           "correlation": "Matched correlation"}

    def __post_init__(self) -> None:
        if self.pool_size < 2:
            raise ValueError(f"pool_size must be >= 2, got {self.pool_size}")

    @property
    def label(self) -> str:
        return "planted_recovery"

    def score(self, split: Split, context: Context) -> dict[str, float]:
        truth = context.planted.get(split.target.channel)
        if truth is None or truth.layer != split.target.layer:
            raise NotApplicable(f"channel {split.target.channel} of {split.target.layer!r} is not a planted channel")
        v, o, p = self._heldout(split, context, truth)
        n = v.shape[0]
        if n < 8:
            raise NotApplicable(f"cross-fitted R^2 needs at least 8 held-out images, got {n}")
        folds = np.zeros(n, dtype=int)
        folds[np.random.default_rng(self.seed).permutation(n)[: n // 2]] = 1
        out: dict[str, float] = {}
        gains = []
        for q in range(PARTS):
            if float(np.ptp(p[:, q])) == 0.0:
                raise NotApplicable(f"planted part {q} is constant on the held-out images")
            r2_split = crossfit_r2(v, p[:, q], folds)
            r2_channel = crossfit_r2(o[:, None], p[:, q], folds)
            out[f"r2_split_p{q}"], out[f"r2_channel_p{q}"] = r2_split, r2_channel
            room = 1.0 - r2_channel
            gains.append((r2_split - r2_channel) / room if room > 1e-12 else 0.0)
        corr = pearson_matrix(v, p)
        match = match_parts(corr)
        matched = []
        for q in range(PARTS):
            j = match.get(q, -1)
            out[f"matched_p{q}"] = float(j)
            matched.append(float(corr[j, q]) if j >= 0 else 0.0)
            out.update({f"corr_v{jj}_p{q}": float(corr[jj, q]) for jj in range(split.k)})
        out.update(recovery=float(np.mean(gains)), correlation=float(np.mean(matched)), images=float(n))
        out.update(self._ari(split, context, truth))
        return out

    def _heldout(self, split: Split, context: Context, truth: PlantedTruth):
        """(v, o, p): spatial sums on every held-out image of the virtual neurons, the channel
        and the planted parts; o and p depend on the target only (memoised across methods)."""
        o, p, size = _channel_and_parts(context, split.target.layer, split.target.channel, truth)
        vs = []
        with torch.no_grad():
            for images, _ in batches(context.heldout, torch.arange(len(context.heldout)), context.batch_size, context.device):
                v = split.activations(images)
                if tuple(v.shape[-2:]) != size:
                    raise RuntimeError(f"{split.method}: virtual maps {tuple(v.shape)} and planted parts "
                                       f"of size {size} differ in size")
                vs.append(spatial_sum(v).double().cpu())
        return torch.cat(vs).numpy(), o, p

    def _ari(self, split: Split, context: Context, truth: PlantedTruth) -> dict[str, float]:
        ids = reference_pool(context, split.target.layer, split.target.channel, self.pool_size)
        true = positive_sums(truth.parts_fn, context, ids).argmax(dim=1)
        pred = pool_labels(split, context, ids)
        extras = {"pool": float(ids.numel()), "pool_groups": float(torch.unique(pred).numel())}
        if torch.unique(true).numel() < 2:
            extras["ari_not_applicable"] = 1.0
            return extras
        return {"ari": float(adjusted_rand_score(true.numpy(), pred.numpy())), **extras}
