"""The synthetic world: the offline default benchmark with ground truth (DESIGN.md).

16 WordNet 3.0 noun classes in 4 hypernym groups, drawn procedurally as (shape, texture)
pairs: classes of one group share a shape, WordNet-unrelated classes share a texture.
Public API:

* classes: :data:`WORLD_CLASSES`, :data:`CLASS_INFOS`, :data:`GROUPS`, :data:`SHAPES`,
  :data:`TEXTURES`, :data:`COLOURS`, :func:`classes_sharing`, :func:`unrelated_pairs_sharing_texture`
* generator: :class:`WorldConfig`, :func:`generate`, :func:`sample_factors`, :func:`render`
* dataset: :class:`SyntheticWorld`, :func:`to_input`, :func:`to_unit`, :data:`MEAN`, :data:`STD`
* world CNN: :class:`WorldCNN`, :data:`DEFAULT_LAYER`, :func:`load_world_cnn`,
  :func:`train_world_cnn`, :func:`accuracy`
* judge: :class:`JudgeNet`, :func:`load_judge`, :func:`train_judge`, :func:`judge_accuracies`
* reports: :func:`write_example_grid`, :func:`world_summary`, :func:`generation_throughput`
"""
from benchmark.sources.world.classes import (
    CLASS_INFOS,
    COLOURS,
    GROUPS,
    NUM_CLASSES,
    SHAPES,
    TEXTURES,
    WORLD_CLASSES,
    Group,
    WorldClass,
    class_of,
    classes_sharing,
    unrelated_pairs_sharing_texture,
)
from benchmark.sources.world.dataset import MEAN, STD, SyntheticWorld, to_input, to_unit
from benchmark.sources.world.generator import DISCRETE_FACTORS, WorldConfig, generate, render, sample_factors
from benchmark.sources.world.judge import JudgeNet, judge_accuracies, load_judge, train_judge
from benchmark.sources.world.model import DEFAULT_LAYER, WorldCNN, accuracy, load_world_cnn, train_world_cnn
from benchmark.sources.world.report import generation_throughput, world_summary, write_example_grid
from benchmark.sources.world.training import TrainConfig

__all__ = [
    "CLASS_INFOS", "COLOURS", "DEFAULT_LAYER", "DISCRETE_FACTORS", "GROUPS", "MEAN", "NUM_CLASSES", "SHAPES",
    "STD", "TEXTURES", "WORLD_CLASSES", "Group", "JudgeNet", "SyntheticWorld", "TrainConfig", "WorldCNN",
    "WorldClass", "WorldConfig", "accuracy", "class_of", "classes_sharing", "generate", "generation_throughput",
    "judge_accuracies", "load_judge", "load_world_cnn", "render", "sample_factors", "to_input", "to_unit",
    "train_judge", "train_world_cnn", "unrelated_pairs_sharing_texture", "world_summary", "write_example_grid",
]
