"""The plug-in interfaces: every attribute the harness reads from a method or a metric.

A method or metric is a frozen dataclass (its fields are its hyperparameters: they go into
the results table and the cache keys) that subclasses :class:`Method` or :class:`Metric` and
is registered with ``@METHODS.register(name)`` / ``@METRICS.register(name)``. The base
classes declare, with defaults, everything the runner, the pre-flight checks, the
meta-evaluation and the contract tests read, so a plug-in overrides what it needs and the
harness never probes for optional attributes.

Situations (:data:`SITUATIONS`): what a target and its context may offer. A plug-in lists in
``requires`` the situations without which it does not apply; the contract tests run it
where everything is offered (it must then apply) and, for each declared situation, where
that one is missing (it must then raise :class:`NotApplicable`). An undeclared
``NotApplicable`` on the full fake context fails the contract tests.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from benchmark.core.errors import NotApplicable
from benchmark.core.types import Column, Context, Split, Target

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from torch import Tensor

SITUATIONS: dict[str, str] = {
    "concepts": "the target names its concepts (class sets), as the pairs, planted and detection tracks do",
    "planted_truth": "the context holds the planted ground truth of the target channel",
    "synthetic_world": "the data are the synthetic world, whose generating factors are known",
    "surgery": "the split is a weight surgery (a rewritten model with a residual)",
    "residual": "the split keeps a residual (surgery and dictionary splits)",
}
# situations that a SPLIT offers or not (the others are offered by the target and context)
SPLIT_SITUATIONS: dict[str, Callable[[Split], bool]] = {
    "surgery": lambda split: split.recomposition == "surgery",
    "residual": lambda split: split.residual_fn is not None,
}
SCOPES = ("split", "detection")
# What a method is FOR in the verdicts (benchmark.reporting.headline): ``method`` a published or
# proposed splitting method (the competitors), ``generic`` a generic tool of the field
# (dictionary learning, plain k-means), ``label_floor`` the cheap honest baseline a method must
# beat (a gate by the network's own concept decision), ``no_op`` a split that does nothing
# useful (copies, random or nuisance gates: a metric they do well on measures something else),
# ``ceiling`` a split built from the planted truth (the best a family could do).
ROLES: dict[str, str] = {
    "method": "a published or proposed splitting method",
    "generic": "a generic tool of the field (dictionary learning, plain clustering)",
    "label_floor": "the label floor: a gate by the network's own concept decision",
    "no_op": "a split that does nothing useful (copies, random or nuisance gates)",
    "ceiling": "a split built from the planted truth: the best its family could reach",
}


def _check_situations(owner: type, requires: frozenset[str]) -> None:
    unknown = sorted(set(requires) - set(SITUATIONS))
    if unknown:
        raise TypeError(f"{owner.__name__}.requires names unknown situation(s) {unknown}; "
                        f"known: {', '.join(SITUATIONS)}")


class Method:
    """Base class of a disentanglement method.

    Override ``fit``; optionally ``polysemanticity`` (for the detection track), ``prepare``
    / ``prepare_detection`` (shared work before a track's units; they must not change any
    result) and ``requires``.
    """

    requires: ClassVar[frozenset[str]] = frozenset()  # situations it needs (see SITUATIONS)
    role: ClassVar[str] = "method"  # see ROLES
    citation: ClassVar[str] = ""  # short citation key shown with the name in headline tables

    def fit(self, context: Context, target: Target) -> Split:
        """The method's split of ``target`` (raise NotApplicable where it does not apply)."""
        raise NotImplementedError(f"{type(self).__name__} must implement fit(context, target)")

    def polysemanticity(self, context: Context, channel: int, concept_a: Sequence[int],
                        concept_b: Sequence[int]) -> float:
        """A similarity of the channel's two concepts (low = polysemantic, compared with gamma)."""
        raise NotApplicable(f"{type(self).__name__} has no polysemanticity score")

    @classmethod
    def scores_polysemanticity(cls) -> bool:
        """Whether the method defines ``polysemanticity`` (it takes part in the detection track)."""
        return cls.polysemanticity is not Method.polysemanticity

    def prepare(self, context: Context, targets: tuple[Target, ...]) -> None:
        """Shared work before the fits of ``targets`` (e.g. one pass for every channel)."""

    def prepare_detection(self, context: Context, targets: tuple[Target, ...]) -> None:
        """Shared work before the polysemanticity scores of ``targets``."""

    @classmethod
    def has_prepare(cls, hook: str) -> bool:
        """Whether ``hook`` ("prepare" or "prepare_detection") is overridden."""
        return getattr(cls, hook) is not getattr(Method, hook)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_situations(cls, cls.requires)
        if cls.role not in ROLES:
            raise TypeError(f"{cls.__name__}.role must be one of {', '.join(ROLES)}, got {cls.role!r}")


class Metric:
    """Base class of a metric.

    ``columns`` describe the numbers ``score`` returns; ``scope = "split"`` scores one split
    (``score(split, context)``), ``scope = "detection"`` scores a table of polysemanticity
    scores (``score(table, context)``). Raise NotApplicable instead of returning NaN.
    """

    columns: ClassVar[tuple[Column, ...]] = ()
    scope: ClassVar[str] = "split"
    # which columns claim to measure disentanglement (checked against the trivial splits
    # and the oracle by tests/metrics/test_metric_sanity.py); with none, say why
    calibrated_columns: ClassVar[tuple[str, ...]] = ()
    not_calibrated: ClassVar[str] = ""
    # the meta-evaluation: the planted-truth column other metrics are ranked against, and
    # whether this metric needs no planted truth (then it is ranked against that truth)
    truth_column: ClassVar[str | None] = None
    label_free: ClassVar[bool] = False
    # the questions a truth metric answers, question -> column (e.g. assignment -> ari), and
    # human titles of columns for headline tables (column -> "Assignment ARI")
    questions: ClassVar[Mapping[str, str]] = {}
    titles: ClassVar[Mapping[str, str]] = {}
    requires: ClassVar[frozenset[str]] = frozenset()  # situations it needs (see SITUATIONS)
    # columns unchanged when every virtual neuron is multiplied by one positive factor (claims
    # checked by tests/metrics/test_properties.py); every metric must be invariant to the ORDER
    # of the virtual neurons (with their concepts and references)
    scale_invariant: ClassVar[tuple[str, ...]] = ()

    @property
    def label(self) -> str:
        """The metric's name in tables (parameterised metrics add their key parameter)."""
        return type(self).registry_name()

    @classmethod
    def registry_name(cls) -> str:
        return str(cls.__dict__.get("_registry_name") or cls.__name__)

    def embedders(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """(embedder name, arguments) this metric will load: checked before a run starts."""
        return ()

    def fvis_backends(self) -> tuple[str, ...]:
        """Feature-visualisation backends this metric will use: checked before a run starts."""
        return ()

    def score(self, split: "Split | pd.DataFrame", context: Context) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement score(split, context)")

    def card_images(self, split: "Split", context: Context) -> Mapping[str, tuple[Any, Sequence[int]]]:
        """Images this metric made of the split's virtual neurons, shown on the split card
        (:mod:`benchmark.engine.cards`): title -> (float images in [0, 1], (n, 3, H, W); the
        virtual neuron of each). Called after ``score`` on the same split; default: none."""
        return {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_situations(cls, cls.requires)
        if cls.scope not in SCOPES:
            raise TypeError(f"{cls.__name__}.scope must be one of {SCOPES}, got {cls.scope!r}")
        names = {c.name for c in cls.columns}
        stray = sorted(set(cls.calibrated_columns) - names)
        if stray:
            raise TypeError(f"{cls.__name__}.calibrated_columns names columns it does not declare: {stray}")


class Embedder:
    """Base class of an image embedder (embedding-distance metrics).

    ``embed(images_unit_nchw) -> (N, D)`` takes float RGB images in [0, 1]. ``datasets``
    names the datasets whose images it can embed (None: any). ``check_weights`` raises a
    PolysemyError before a run starts when its weights are not available.
    """

    datasets: ClassVar[tuple[str, ...] | None] = None
    prepares_weights: ClassVar[bool] = False  # True: prepare() trains or loads weights worth doing ahead of time

    def embed(self, images_unit_nchw: "Tensor") -> "Tensor":
        raise NotImplementedError(f"{type(self).__name__} must implement embed(images)")

    def prepare(self) -> None:
        """Train or load the weights ``embed`` will use, so that a later call finds them
        ready (a run calls it ahead of the units: :mod:`benchmark.run.warmup`). Nothing by
        default."""

    def check_weights(self) -> None:
        """Nothing to check by default (weights that ship with the package)."""
