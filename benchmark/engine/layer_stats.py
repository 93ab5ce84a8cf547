"""Statistics of one (model, layer, dataset) that every method shares.

Produced by :func:`benchmark.engine.capture.capture` in one streaming pass; stored in the cache as
flat tensors. Definitions (x = layer input, z = layer output, both spatially summed per image):

* ``input_sum[t]``  = sum over images of class t of sum_hw x  -> class means give the ARVs of
  Hesse et al. (2025) for a linear conv: ARV(c,t)_j = W[c,j] * mean_n sum_hw x_j.
* ``output_sum[t]`` = sum over images of class t of sum_hw z.
* ``top_max_ids[c]`` / ``top_mean_ids[c]``: the k dataset indices with the largest max / mean
  spatial activation of channel c (ties broken by the smaller index), with their values.
* ``importance_counts[t, c]``: number of images of class t for which channel c is important,
  i.e. A_c(n) >= tau * sum_c' max(A_c'(n), 0) with A_c(n) = sum_hw z_c * d y_t / d z_c
  (Input x Gradient w.r.t. the true-class logit; Hesse et al. 2025, step 1).
* ``attribution_sum[t, c]``: sum of A_c(n) over images of class t.
* ``sample_vectors`` (n, C_out): a seeded uniform sample of the layer's output vectors (one per
  image and spatial position), with their ``sample_ids`` (dataset indices) and
  ``sample_positions`` (flat h * W + w); present when the capture asked for one.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class LayerStats:
    class_counts: Tensor  # (T,) long
    input_sum: Tensor  # (T, C_in) float64
    output_sum: Tensor  # (T, C_out) float64
    top_max_ids: Tensor  # (C_out, k) long
    top_max_values: Tensor  # (C_out, k)
    top_mean_ids: Tensor  # (C_out, k) long
    top_mean_values: Tensor  # (C_out, k)
    importance_counts: Tensor | None = None  # (T, C_out) long
    attribution_sum: Tensor | None = None  # (T, C_out) float64
    tau: float | None = None
    sample_vectors: Tensor | None = None  # (n, C_out) float32
    sample_ids: Tensor | None = None  # (n,) long
    sample_positions: Tensor | None = None  # (n,) long

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    @property
    def num_channels(self) -> int:
        return int(self.output_sum.shape[1])

    def input_mean(self, classes: tuple[int, ...] | list[int]) -> Tensor:
        """Mean spatially summed layer input over the images of a class set (C_in,)."""
        return self._class_mean(self.input_sum, classes)

    def output_mean(self, classes: tuple[int, ...] | list[int]) -> Tensor:
        return self._class_mean(self.output_sum, classes)

    def _class_mean(self, sums: Tensor, classes) -> Tensor:
        idx = torch.as_tensor(list(classes), dtype=torch.long)
        n = self.class_counts[idx].sum()
        if n == 0:
            raise ValueError(f"no images of classes {list(classes)} in the captured dataset")
        return sums[idx].sum(0) / n

    def relevant_classes(self, p: float = 0.75) -> Tensor:
        """(T, C_out) bool: channel c is relevant to class t iff it is important for at
        least ``p`` of the images of t (Hesse et al. 2025, step 1)."""
        if self.importance_counts is None:
            raise ValueError("these statistics were captured without importance counters (tau=None)")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {p}")
        present = self.class_counts > 0
        return (self.importance_counts >= p * self.class_counts[:, None]) & present[:, None]

    def to_tensors(self) -> dict[str, Tensor]:
        """Flat tensors for the cache. The per-class tables keep only the rows of classes that
        occur (``class_rows``; a class without images has all-zero rows), so an entry grows with
        the classes a dataset uses, not with the model's 1000 ImageNet classes."""
        present = torch.nonzero(self.class_counts > 0).flatten()
        out: dict[str, Tensor] = {"class_rows": present, "num_classes": torch.tensor([self.num_classes])}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "tau":
                out[f.name] = torch.tensor([value], dtype=torch.float64)
            elif f.name in CLASS_TABLES:
                out[f.name] = value[present].contiguous()
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> "LayerStats":
        """Inverse of :meth:`to_tensors` (also reads the older dense layout)."""
        kwargs: dict[str, Any] = dict(tensors)
        rows, total = kwargs.pop("class_rows", None), kwargs.pop("num_classes", None)
        if rows is not None and total is not None:
            for name in CLASS_TABLES:
                if name in kwargs:
                    sparse = kwargs[name]
                    dense = torch.zeros((int(total.item()), *sparse.shape[1:]), dtype=sparse.dtype)
                    dense[rows] = sparse
                    kwargs[name] = dense
        if "tau" in kwargs:
            kwargs["tau"] = float(kwargs["tau"].item())
        return cls(**kwargs)


# the per-class tables (first dimension: the dataset's classes)
CLASS_TABLES = ("class_counts", "input_sum", "output_sum", "importance_counts", "attribution_sum")
