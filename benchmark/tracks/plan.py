"""The plan of one track: its context, its targets and how its units run; and the WordNet
test of two unrelated classes shared by the track builders."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from benchmark.core.types import Context, Target


@dataclass(frozen=True)
class TrackPlan:
    """What one track evaluates: a context, its targets and how units are executed
    (``kind``: "split" = fit every method on every target and score split metrics;
    "detection" = score every method's polysemanticity on all targets at once).

    ``contexts`` gives a target its own context where it differs from ``context`` (the
    planted track: one planted model per model seed and layer); ``model_seeds`` the model
    seed of a target whose model is not the run's.
    """

    track: str
    kind: str
    context: Context
    targets: tuple[Target, ...]
    info: dict[str, Any] = field(default_factory=dict)
    contexts: Mapping[Target, Context] = field(default_factory=dict)
    model_seeds: Mapping[Target, int] = field(default_factory=dict)

    def context_of(self, target: Target) -> Context:
        return self.contexts.get(target, self.context)

    def pooled(self, attribute: str, default: str) -> str:
        """The ``model`` or ``layer`` a pooled row (no single target: the detection track) speaks
        for: the targets' distinct values joined by "+" in order of appearance, else ``default``."""
        values = list(dict.fromkeys(str(getattr(t, attribute)) for t in self.targets))
        return "+".join(values) if values else default

    def model_seed_of(self, target: Target | None, default: int) -> int:
        return self.model_seeds.get(target, default) if target is not None else default


def wordnet_unrelated(classes, threshold: float) -> Callable[[int, int], bool]:
    """``unrelated(t1, t2)``: Wu-Palmer similarity of the classes' synsets below threshold."""
    from benchmark.sources.wordnet import similarity

    def unrelated(t1: int, t2: int) -> bool:
        return similarity(classes[t1].synset, classes[t2].synset, "wup") < threshold

    return unrelated
