"""Tracks: which targets each part of the benchmark evaluates (DESIGN.md "Tracks").

* ``planted`` (:mod:`.planted`): channels made polysemantic on purpose with ground truth,
  functionally planted over layers and model seeds and filtered for validity (between-class:
  the two parts serve different classes); ``planted_within``: the same, both parts inside one class;
* ``pairs`` (:mod:`.pairs`): channel + class pair, detected by the ARV paper's rule or given;
* ``layer`` (:mod:`.layer`): every channel (or an even sample) of a layer, as PURE evaluates;
* ``detection`` (:mod:`.detection`): (channel, class pair) candidates scored by each
  method's polysemanticity against WordNet similarity.

Each builder returns a :class:`~benchmark.tracks.plan.TrackPlan`; ``TRACKS`` maps names to
builders. May import: core, storage, sources, engine, planting (never methods, metrics,
evaluation, reporting, run or the CLI).
"""
from __future__ import annotations

from typing import Callable

from benchmark.core.config import RunConfig
from benchmark.engine.environment import Environment
from benchmark.tracks.detection import detection_track
from benchmark.tracks.layer import layer_track
from benchmark.tracks.pairs import pairs_track
from benchmark.tracks.plan import TrackPlan, wordnet_unrelated
from benchmark.tracks.planted import planted_track, planted_within_track

TRACKS: dict[str, Callable[[Environment, RunConfig], TrackPlan]] = {
    "planted": planted_track,
    "planted_within": planted_within_track,
    "pairs": pairs_track,
    "layer": layer_track,
    "detection": detection_track,
}

__all__ = ["TRACKS", "TrackPlan", "wordnet_unrelated"]
