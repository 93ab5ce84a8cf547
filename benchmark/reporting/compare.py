"""Compare the results of two runs value by value: did a rerun (another machine, another thread
count, a resumed run) reproduce every number?

Rows are matched on their identity (track, model, layer, dataset, target, method, parameters,
metric, column and the seed keys); for each matched row the status must agree and the values
must be equal within ``rtol`` / ``atol`` (NaN equals NaN: "not applicable" on both sides).
:func:`compare_results` returns the differences as a small frozen report; ``polysemy compare``
prints it and exits 1 when anything differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.evaluation.statistics import seed_columns
from benchmark.reporting.leaderboards import load_results

IDENTITY = ("track", "model", "layer", "dataset", "target", "method", "method_params", "metric", "column")


@dataclass(frozen=True)
class Comparison:
    """Rows only in A, only in B, with another status, and with values outside the tolerance."""

    matched: int
    only_a: pd.DataFrame
    only_b: pd.DataFrame
    status: pd.DataFrame
    values: pd.DataFrame

    @property
    def identical(self) -> bool:
        return not (len(self.only_a) or len(self.only_b) or len(self.status) or len(self.values))

    def summary(self, show: int = 20) -> str:
        lines = [f"{self.matched} rows matched; {len(self.only_a)} only in A, {len(self.only_b)} only in B, "
                 f"{len(self.status)} with another status, {len(self.values)} with another value"]
        for title, frame in (("only in A", self.only_a), ("only in B", self.only_b), ("status", self.status),
                             ("values", self.values)):
            if len(frame):
                lines += ["", f"{title} (first {min(show, len(frame))}):", frame.head(show).to_string(index=False)]
        return "\n".join(lines)


def compare_results(a: str | Path, b: str | Path, rtol: float = 1e-9, atol: float = 1e-12) -> Comparison:
    """Compare the ``results.csv`` of run folders (or csv paths) ``a`` and ``b``."""
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be >= 0, got {rtol} and {atol}")
    left, right = load_results(a), load_results(b)
    keys = list(IDENTITY) + sorted(set(seed_columns(left)) | set(seed_columns(right)))
    for frame in (left, right):
        for key in keys:
            if key not in frame:
                frame[key] = -1
    cols = keys + ["status", "value"]
    merged = left[cols].merge(right[cols], on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = merged[merged["_merge"] == "left_only"][keys]
    only_b = merged[merged["_merge"] == "right_only"][keys]
    both = merged[merged["_merge"] == "both"]
    status = both[both["status_a"] != both["status_b"]][keys + ["status_a", "status_b"]]
    both = both[both["status_a"] == both["status_b"]]  # a changed status is reported once, above
    va, vb = both["value_a"].to_numpy(float), both["value_b"].to_numpy(float)
    same = np.isclose(va, vb, rtol=rtol, atol=atol, equal_nan=True)
    values = both[~same][keys + ["value_a", "value_b"]]
    return Comparison(int(len(both) + len(status)), only_a.reset_index(drop=True), only_b.reset_index(drop=True),
                      status.reset_index(drop=True), values.reset_index(drop=True))
