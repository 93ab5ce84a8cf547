"""Human-facing views of the synthetic world: an example grid, a Markdown summary and a
generation-throughput benchmark."""
from __future__ import annotations

import io
import time
from pathlib import Path

import torch
from torch import nn

from benchmark.sources.world.classes import COLOURS, GROUPS, NUM_CLASSES, SHAPES, TEXTURES, WORLD_CLASSES
from benchmark.sources.world.dataset import SyntheticWorld
from benchmark.sources.world.generator import WorldConfig, generate
from benchmark.storage.cache import atomic_write


def write_example_grid(path: str | Path, per_class: int = 8, seed: int = 0, split: str = "val",
                       config: WorldConfig = WorldConfig()) -> Path:
    """Write a PNG with ``per_class`` examples of every class (one row per class, labelled
    with name, WordNet group, shape and texture); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    idx = torch.tensor([c + NUM_CLASSES * k for c in range(NUM_CLASSES) for k in range(per_class)])
    images, _ = generate(idx, seed=seed, split=split, config=config)
    fig, axes = plt.subplots(NUM_CLASSES, per_class, figsize=(0.62 * per_class, 0.62 * NUM_CLASSES),
                             squeeze=False, gridspec_kw={"wspace": 0.06, "hspace": 0.06})
    for c, wc in enumerate(WORLD_CLASSES):
        for k in range(per_class):
            ax = axes[c, k]
            ax.imshow(images[c * per_class + k].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        label = f"{wc.info.name}\n{GROUPS[wc.group].name}: {wc.shape_name}, {wc.texture_name}"
        axes[c, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7.5, labelpad=6)
    fig.suptitle("Synthetic world: one row per class (WordNet group: shape, texture)", fontsize=9, y=0.905)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))


def _wordnet_lines() -> list[str]:
    try:
        from benchmark.sources import wordnet as wn

        synsets = [wn.synset_from_wnid(c.info.wnid) for c in WORLD_CLASSES]
    except Exception as err:  # WordNet not provisioned: the summary says so instead of failing
        return [f"WordNet similarities unavailable ({type(err).__name__}: {str(err).splitlines()[0]})."]
    within, across = [], []
    for a in WORLD_CLASSES:
        for b in WORLD_CLASSES:
            if a.info.index < b.info.index:
                sim = wn.similarity(synsets[a.info.index], synsets[b.info.index], "wup")
                (within if a.group == b.group else across).append(sim)
    return [f"Wu-Palmer similarity: within groups {min(within):.2f}..{max(within):.2f}, "
            f"across groups {min(across):.2f}..{max(across):.2f}."]


def world_summary(model: nn.Module | None = None, judge: nn.Module | None = None, seed: int = 0) -> str:
    """Markdown description of the world: classes, groups, shared primitives, and the
    validation accuracies of the world CNN and the judge (loaded or trained if not given)."""
    from benchmark.sources.world.judge import judge_accuracies, load_judge
    from benchmark.sources.world.model import DEFAULT_LAYER, accuracy, load_world_cnn

    model = load_world_cnn(world_seed=seed) if model is None else model
    judge = load_judge(world_seed=seed) if judge is None else judge
    val = SyntheticWorld("val", seed=seed)
    lines = ["# The synthetic world", "",
             f"{NUM_CLASSES} classes (WordNet 3.0 noun synsets) in {len(GROUPS)} hypernym groups; "
             f"32x32 RGB images; each class is one (shape, texture) pair, with random colour "
             f"({len(COLOURS)} bins), position, scale, rotation, background and noise.", "",
             "| # | wnid | synset | name | group | shape | texture |", "|---|---|---|---|---|---|---|"]
    for c in WORLD_CLASSES:
        i = c.info
        lines.append(f"| {i.index} | {i.wnid} | {i.synset} | {i.name} | {GROUPS[c.group].name} | "
                     f"{c.shape_name} | {c.texture_name} |")
    lines += ["", "Shared primitives:", ""]
    for g in GROUPS:
        names = ", ".join(c.info.name for c in WORLD_CLASSES if c.group == g.index)
        lines.append(f"- shape **{SHAPES[g.shape]}**: WordNet group {g.name} ({g.wnid}, {g.synset}): {names}")
    for t, texture in enumerate(TEXTURES):
        names = ", ".join(c.info.name for c in WORLD_CLASSES if c.texture == t)
        lines.append(f"- texture **{texture}**: WordNet-unrelated classes {names}")
    lines += ["", *_wordnet_lines(), ""]
    cnn_info = getattr(model, "world_info", {})
    lines.append(f"World CNN (ResNet-style, default layer `{DEFAULT_LAYER}`): validation accuracy "
                 f"{accuracy(model, val):.4f} on {len(val)} images"
                 + (f"; trained in {cnn_info['train_seconds']} s" if "train_seconds" in cnn_info else "") + ".")
    accs = judge_accuracies(judge, val)
    judge_info = getattr(judge, "world_info", {})
    lines.append("Judge (VGG-style, factor heads) validation accuracy: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in accs.items())
                 + (f"; trained in {judge_info['train_seconds']} s" if "train_seconds" in judge_info else "") + ".")
    return "\n".join(lines) + "\n"


def generation_throughput(n: int = 20_000, threads: int | None = 1, repeats: int = 2) -> float:
    """Benchmark (not a test): images per second rendered by the generator, best of
    ``repeats`` runs of ``n`` images on ``threads`` threads (None: torch's default). Prints it."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generate(range(512))  # warm-up (allocator, kernels)
        best = 0.0
        for r in range(repeats):
            start = time.perf_counter()
            generate(range(r * n, (r + 1) * n))
            best = max(best, n / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
    print(f"synthetic world generation: {best:,.0f} images/s ({n} images, "
          f"{threads or previous} thread{'s' if (threads or previous) > 1 else ''})")
    return best
