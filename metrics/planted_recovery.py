"""Recovery of a planted polysemantic channel's known parts (DESIGN.md, "planted
recovery"; the planting is :mod:`benchmark.planting`: channel = part_0 + part_1 exactly).

Definition. On every held-out image n take the signed spatial sums ``v_j(n)`` of the
virtual neurons and ``p_q(n)`` of the planted parts (``truth.parts_fn``). The unit is the
image (as in the ARV activation ratios): a method is asked which part an image excites,
not to reproduce maps pixel by pixel (gating methods cannot; their pixel maps are the
channel times a per-image weight).

* ``C[j, q]`` = Pearson correlation over images of v_j and p_q (0 where either is constant).
* Matching: each part q gets a different virtual neuron m(q) maximising sum_q C[m(q), q]
  (``scipy.optimize.linear_sum_assignment``). With k = 1 only one part is matched; an
  unmatched part scores correlation 0 and explained variance 0 (predicting it by a
  constant, its mean, explains nothing). Extra virtual neurons (k > 2) are ignored here.
* ``correlation`` = mean over the two parts of C[m(q), q]  (bounds -1..1).
* ``explained_variance`` = mean over parts of 1 - sum_n (p_q - v_m(q))^2 / sum_n (p_q - mean p_q)^2,
  the raw fit, no rescaling (bounds -inf..1).
* ``ari``: every membership (virtual neuron i, reference image r in split.reference_ids[i])
  is one item (an image listed by two neurons counts twice) with predicted label i and true
  label the part with the larger positive spatial sum sum_hw max(p_q, 0) on r (ties -> part
  0); ``sklearn.metrics.adjusted_rand_score`` (bounds -0.5..1).

Extras: ``corr_v{j}_p{q}``, ``matched_p{q}`` (-1 unmatched), ``ev_p{q}``, ``correlation_maps``
(mean matched Pearson over all pixels of all images, same matching), ``images``, ``references``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from benchmark.registry import METRICS
from benchmark.types import Column, Context, NotApplicable, PlantedTruth, Split
from metrics._common import batches, spatial_sum

PARTS = 2


def pearson_matrix(a_nj: np.ndarray, b_nq: np.ndarray) -> np.ndarray:
    """(J, Q) Pearson correlations between the columns of a and b; 0 for a constant column
    (clipped to [-1, 1] against round-off)."""
    a = a_nj - a_nj.mean(0)
    b = b_nq - b_nq.mean(0)
    norm = np.sqrt((a ** 2).sum(0))[:, None] * np.sqrt((b ** 2).sum(0))[None, :]
    cov = a.T @ b
    return np.clip(np.divide(cov, norm, out=np.zeros_like(cov), where=norm > 0), -1.0, 1.0)


def match_parts(corr_jq: np.ndarray) -> dict[int, int]:
    """part q -> virtual neuron j maximising the total matched correlation."""
    rows, cols = linear_sum_assignment(corr_jq, maximize=True)
    return {int(q): int(j) for j, q in zip(rows, cols)}


class _MapMoments:
    """Streaming Pearson of flattened maps (all pixels of all images)."""

    def __init__(self, k: int):
        self.n = 0
        self.sv, self.svv = np.zeros(k), np.zeros(k)
        self.sp, self.spp = np.zeros(PARTS), np.zeros(PARTS)
        self.svp = np.zeros((k, PARTS))

    def add(self, v_nkhw: torch.Tensor, p_nqhw: torch.Tensor) -> None:
        v = v_nkhw.double().transpose(0, 1).flatten(1)  # (k, NHW)
        p = p_nqhw.double().transpose(0, 1).flatten(1)
        self.n += v.shape[1]
        self.sv += v.sum(1).numpy(); self.svv += (v ** 2).sum(1).numpy()
        self.sp += p.sum(1).numpy(); self.spp += (p ** 2).sum(1).numpy()
        self.svp += (v @ p.T).numpy()

    def corr(self) -> np.ndarray:
        cov = self.svp - np.outer(self.sv, self.sp) / self.n
        var_v = np.clip(self.svv - self.sv ** 2 / self.n, 0, None)
        var_p = np.clip(self.spp - self.sp ** 2 / self.n, 0, None)
        norm = np.sqrt(np.outer(var_v, var_p))
        corr = np.divide(cov, norm, out=np.zeros_like(cov), where=norm > 1e-12 * max(1.0, float(norm.max())))
        return np.clip(corr, -1.0, 1.0)


@METRICS.register("planted_recovery")
@dataclass(frozen=True)
class PlantedRecovery:
    """Recovery of a planted channel's parts: matched correlation, explained variance, ARI.

    Correlation and explained variance after optimal matching; the adjusted Rand index of
    the reference assignment."""

    columns: ClassVar[tuple[Column, ...]] = (
        Column("correlation", True, (-1.0, 1.0)),
        Column("explained_variance", True, (None, 1.0)),
        Column("ari", True, (-0.5, 1.0)),
    )
    scope: ClassVar[str] = "split"

    @property
    def label(self) -> str:
        return "planted_recovery"

    def score(self, split: Split, context: Context) -> dict[str, float]:
        truth = context.planted.get(split.target.channel)
        if truth is None or truth.layer != split.target.layer:
            raise NotApplicable(f"channel {split.target.channel} of {split.target.layer!r} is not a planted channel")
        items = [(i, int(r)) for i, ids in enumerate(split.reference_ids) for r in ids]
        if not items:
            raise NotApplicable(f"{split.method} gives no reference samples: the ARI needs them")
        v_sums, p_sums, maps = self._heldout(split, context, truth)
        corr = pearson_matrix(v_sums, p_sums)
        match = match_parts(corr)
        out: dict[str, float] = {}
        corr_maps = maps.corr()
        matched_corr, matched_ev, matched_map = [], [], []
        for q in range(PARTS):
            p = p_sums[:, q]
            sst = float(((p - p.mean()) ** 2).sum())
            if sst == 0.0:
                raise NotApplicable(f"planted part {q} is constant on the held-out images")
            j = match.get(q, -1)
            out[f"matched_p{q}"] = float(j)
            c = float(corr[j, q]) if j >= 0 else 0.0
            ev = 1.0 - float(((p - v_sums[:, j]) ** 2).sum()) / sst if j >= 0 else 0.0
            out[f"ev_p{q}"] = ev
            matched_corr.append(c)
            matched_ev.append(ev)
            matched_map.append(float(corr_maps[j, q]) if j >= 0 else 0.0)
            for jj in range(split.k):
                out[f"corr_v{jj}_p{q}"] = float(corr[jj, q])
        predicted, true = self._assignment(items, context, truth)
        out.update(
            correlation=float(np.mean(matched_corr)),
            explained_variance=float(np.mean(matched_ev)),
            ari=float(adjusted_rand_score(true, predicted)),
            correlation_maps=float(np.mean(matched_map)),
            images=float(v_sums.shape[0]),
            references=float(len(items)),
        )
        return out

    def _heldout(self, split: Split, context: Context, truth: PlantedTruth):
        n = len(context.heldout)
        if n < 2:
            raise NotApplicable(f"correlation needs at least 2 held-out images, got {n}")
        vs, ps, maps = [], [], _MapMoments(split.k)
        with torch.no_grad():
            for images, _ in batches(context.heldout, torch.arange(n), context.batch_size, context.device):
                v, p = split.activations(images), truth.parts_fn(images)
                if v.shape[-2:] != p.shape[-2:]:
                    raise RuntimeError(f"{split.method}: virtual maps {tuple(v.shape)} and planted parts {tuple(p.shape)} differ in size")
                vs.append(spatial_sum(v).double().cpu())
                ps.append(spatial_sum(p).double().cpu())
                maps.add(v.cpu(), p.cpu())
        return torch.cat(vs).numpy(), torch.cat(ps).numpy(), maps

    def _assignment(self, items, context: Context, truth: PlantedTruth) -> tuple[list[int], list[int]]:
        ids = sorted({r for _, r in items})
        part_of: dict[int, int] = {}
        with torch.no_grad():
            for start in range(0, len(ids), context.batch_size):
                chunk = ids[start:start + context.batch_size]
                images = context.fit.images(chunk).to(context.device)
                positive = spatial_sum(truth.parts_fn(images).clamp(min=0))  # (n, 2)
                part_of.update(zip(chunk, positive.argmax(1).tolist()))
        return [i for i, _ in items], [part_of[r] for _, r in items]
