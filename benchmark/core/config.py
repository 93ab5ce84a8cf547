"""Run configuration: TOML files (``benchmark/configs/*.toml``) parsed into frozen dataclasses.

Every key is checked: an unknown key is an error that lists the valid ones, so a typo never
silently falls back to a default. Command-line overrides use dotted paths
(``--set tracks.layer.num_channels=8``) and go through the same checks.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, get_type_hints

from benchmark.core.errors import InputError, MissingFileError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "synthetic"


class ConfigError(InputError):
    """A configuration key or value that is not allowed (the message says what is)."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "world_cnn"
    weights: str | None = None  # file path or tag; None = the model's default
    layer: str | None = None  # None = the model's ``default_layer``
    layers: tuple = ()  # layers the pairs, layer, detection (and planted) tracks study; () = [layer]
    seed: int | None = None  # model seed (world CNN initialisation and shuffling); None = ``seed``
    # further subject models studied on the same data by every track: [{name = ..., layers = [...]}, ...]
    # (their targets carry their model's name; benchmark.engine.environment.Subject)
    extra: tuple = ()


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic_world"
    root: str | None = None  # data folder (ImageNet); checked to exist
    fit_split: str = "train"
    heldout_split: str = "val"
    fit_limit: int = 0  # 0 = every image; else the first n (deterministic)
    heldout_limit: int = 0
    image_size: int | None = None  # passed to datasets that accept it
    skip_unreadable: bool = False  # true: leave out images that cannot be read (listed in run.json)
    seed: int | None = None  # data seed (which synthetic-world images); None = ``seed``


@dataclass(frozen=True)
class CaptureConfig:
    top_k: int = 100
    tau: float = 0.03
    # None: tau as given. A number m: tau is calibrated per (model, layer) on the FIT split so that on
    # average m channels per fit image are important (benchmark.engine.tau_calibration); recorded in run.json
    important_per_image: float | None = None
    calibration_images: int = 256  # fit images (an even spread) the calibration reads
    # None: the tracks' p as given. A number r: p is calibrated per (model, layer) from the fit statistics
    # so that on average r channels are relevant per class (benchmark.engine.tau_calibration.calibrate_p)
    relevant_per_class: float | None = None
    sample_vectors: int = 8192  # layer output vectors sampled in the capture pass (the SAE's training data)


@dataclass(frozen=True)
class PlantedTrack:
    """The planted track (benchmark.tracks.planted): candidates per (model seed, layer), the
    functional fine-tuning schedule (benchmark.planting.functional) and the validity filter
    (benchmark.planting.validity)."""

    enabled: bool = True
    layer: str | None = None  # used when ``layers`` is empty (None = model.layer)
    layers: tuple = ()  # layers to plant in; () = [layer]
    model_seeds: tuple | None = None  # model seeds to plant in; None = [the run's model seed]; [] is refused
    num_channels: int = 2  # candidate pairs planted per (model seed, layer)
    wordnet_threshold: float = 0.5  # the two parts' classes must be less similar (Wu-Palmer)
    max_part_correlation: float = 0.5  # and their class profiles must correlate less than this
    min_candidate_relevance: float = 0.0  # and each must be important for this share of its class's fit images
    heldout_images: int = 0  # held-out images the planted track evaluates on (even spread); 0 = all
    functional_steps: int = 150  # fine-tuning steps after merging; 0 = plain merge only
    functional_lr: float = 0.003
    functional_batch_size: int = 128
    functional_dropout: float = 0.5  # dropout of the layer's other channels while fine-tuning
    min_response: float = 0.0  # validity: mean response on each concept's held-out images above this
    min_relevance_pass: float = 0.5  # validity: share of each concept's held-out images passing the filter
    min_part_share: float = 0.2  # validity: share of each part among the top references
    min_accuracy_kept: float = 0.5  # validity: share of its held-out accuracy the fine-tuned network keeps
    required: bool = True  # False: if every candidate fails the filter, the run goes on without planted targets


@dataclass(frozen=True)
class PlantedWithinTrack:
    """Within-class planted targets (benchmark.tracks.planted): both parts of a planted channel
    serve the SAME class, planted into the same models as the planted track's between-class
    pairs (its model seeds, layers, fine-tuning and validity filter)."""

    enabled: bool = False
    num_channels: int = 2  # within-class candidate pairs per (model seed, layer)


@dataclass(frozen=True)
class PairsTrack:
    enabled: bool = True
    layer: str | None = None
    source: str = "detected"  # "detected" (tau/p + gamma rule) or "given"
    pairs: tuple = ()  # given: [[channel, [classes a], [classes b]], ...]
    max_pairs: int = 6
    p: float = 0.75
    gamma: float = 0.5


@dataclass(frozen=True)
class LayerTrack:
    enabled: bool = True
    layer: str | None = None
    num_channels: int = 8  # 0 = every channel of the layer; else an even sample


@dataclass(frozen=True)
class DetectionTrack:
    enabled: bool = True
    layer: str | None = None
    p: float = 0.75
    max_pairs: int = 200


@dataclass(frozen=True)
class TracksConfig:
    planted: PlantedTrack = field(default_factory=PlantedTrack)
    planted_within: PlantedWithinTrack = field(default_factory=PlantedWithinTrack)
    pairs: PairsTrack = field(default_factory=PairsTrack)
    layer: LayerTrack = field(default_factory=LayerTrack)
    detection: DetectionTrack = field(default_factory=DetectionTrack)


@dataclass(frozen=True)
class FiguresConfig:
    enabled: bool = True
    fvis_backend: str = "maco"  # a FEATURE_VIS name
    fvis_steps: int = 128
    fvis_size: int | None = None  # image side in pixels; None = the backend's default


@dataclass(frozen=True)
class Seeds:
    """The three seeds of a run: ``data`` (which synthetic-world images), ``model`` (world
    CNN initialisation and shuffling) and ``method`` (every method's ``seed`` field and the
    context seed)."""

    data: int
    model: int
    method: int


@dataclass(frozen=True)
class RunConfig:
    name: str = DEFAULT_CONFIG
    seed: int = 0  # the default of data.seed, model.seed and method_seed where those are unset
    method_seed: int | None = None  # None = ``seed``
    device: str = "cpu"
    batch_size: int = 128
    num_workers: int = 0  # DataLoader workers of the capture pass (pinned memory on CUDA)
    output_dir: str = "runs/synthetic"
    evidence: str | None = None  # a run folder whose meta_evaluation.csv decides the headline rule's (b) here
    methods: tuple = ("all",)
    metrics: tuple = ("all",)
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    tracks: TracksConfig = field(default_factory=TracksConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)

    @property
    def seeds(self) -> Seeds:
        """The resolved data, model and method seeds (each defaults to ``seed``)."""
        def pick(value):
            return self.seed if value is None else value

        return Seeds(data=pick(self.data.seed), model=pick(self.model.seed), method=pick(self.method_seed))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


def non_default(config_dict: Mapping[str, Any]) -> dict:
    """``config_dict`` (a :meth:`RunConfig.to_dict`) without the keys whose value is the
    field's default, table by table: what a run's identity hashes, so that adding a config
    field (at a default that keeps the old behaviour) leaves every existing run's identity as
    it was. Changing a default changes the code fingerprint instead."""
    return _strip(dict(config_dict), RunConfig().to_dict())


def _strip(values: dict, defaults: dict) -> dict:
    out = {}
    for key, value in values.items():
        default = defaults.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(default, dict) and key not in ("method_params", "metric_params"):
            value = _strip(value, default)
            if value:
                out[key] = value
        elif value != default:
            out[key] = value
    return out


_MISSING = object()


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    valid = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in valid:
            raise ConfigError(f"unknown config key {path!r}; valid keys{' in ' + where if where else ''}: {', '.join(valid)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)  # type: ignore[arg-type]  # is_dataclass narrows to instance | type
        else:
            kwargs[key] = _coerce(value, hint, path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    text = str(hint)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    if hint is float and not isinstance(value, (int, float)):
        raise ConfigError(f"{path} must be a number, got {value!r}")
    if hint is float:
        return float(value)
    if hint == (float | None) and value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if text.startswith("str") and value is not None and not isinstance(value, str):
        raise ConfigError(f"{path} must be a string, got {value!r}")
    if hint == (tuple | None) and value is None:
        return None
    if hint is tuple or hint == (tuple | None):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if "Mapping" in text and not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a table, got {value!r}")
    if value == "" and "None" in text:
        return None
    return value


def packaged_toml(name: str, folder: Path, what: str) -> Path:
    """A TOML file by path (a ``.toml`` name or an existing file), else ``folder/<name>.toml``;
    a missing one is a FileNotFoundError naming the packaged ``what`` files."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise MissingFileError(f"{what} file {path} does not exist")
        return path
    packaged = folder / f"{name}.toml"
    if not packaged.exists():
        available = sorted(p.stem for p in folder.glob("*.toml"))
        raise MissingFileError(f"no {what} named {name!r}; packaged {what}s: {', '.join(available)}")
    return packaged


def config_path(name_or_path: str | None) -> Path:
    """A config by file path, or by name from the packaged configs folder."""
    return packaged_toml(name_or_path or DEFAULT_CONFIG, CONFIG_DIR, "config")


def load_config(name_or_path: str | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Parse a TOML config and apply dotted-path overrides (``{"tracks.layer.num_channels": 4}``)."""
    path = config_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot override {dotted!r}: {key!r} is not a table")
        node[leaf] = value
    return _build(RunConfig, data, "")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``k=3``, ``k="x"``, ``k=[1,2]``); bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value
