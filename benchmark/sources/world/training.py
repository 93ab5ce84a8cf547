"""Training loop and weight cache shared by the world CNN and the judge network.

Training is deterministic for a seed whatever the thread count: the initialisation and the
shuffling draw from their own seeded generators (the caller's global RNG state is restored
afterwards), and the loop runs on one intra-op thread (:func:`benchmark.core.threads.single_threaded`;
with torch's default threads, the world CNN trained on 1 and on 2 threads were different
networks). Optimiser: AdamW with a one-cycle learning-rate
schedule (Smith & Topin 2019). Trained weights are cached as safetensors files under
``cache_root()/world/`` keyed by the hash of everything that determines them (including a
fingerprint of the world's generating and training code, :data:`WORLD_CODE`), written
atomically; the file's metadata repeats that spec, records accuracy and training time and
holds a payload checksum verified on load (see :mod:`benchmark.storage.cache`).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.errors import MissingFileError
from benchmark.core.threads import single_threaded
from benchmark.sources.world.dataset import to_input
from benchmark.storage.cache import (
    cache_root,
    canonical_json,
    closure_fingerprint,
    ensure_root,
    load_entry,
    save_entry,
    spec_key,
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyperparameters (they are part of the weight cache key)."""

    epochs: int = 4
    batch_size: int = 128
    max_lr: float = 0.01
    weight_decay: float = 5e-4
    pct_start: float = 0.25

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.max_lr > 0:
            raise ValueError(f"max_lr must be > 0, got {self.max_lr}")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU RNG seeded, restoring the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


OutputFn = Callable[[nn.Module, Tensor], Mapping[str, Tensor]]


def fit(model: nn.Module, images_u8: Tensor, targets: Mapping[str, Tensor], output_fn: OutputFn,
        config: TrainConfig, seed: int, desc: str, progress: bool = True) -> nn.Module:
    """Train ``model`` in place to predict every ``targets[name]`` (class indices) with a
    summed cross-entropy; ``output_fn(model, x)`` returns logits per target name."""
    from tqdm.auto import tqdm

    n = images_u8.shape[0]
    for name, t in targets.items():
        if t.shape != (n,):
            raise ValueError(f"target {name!r} has shape {tuple(t.shape)}, expected ({n},)")
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.max_lr, total_steps=config.epochs * steps_per_epoch, pct_start=config.pct_start)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=desc, disable=not progress, unit="step")
    # one intra-op thread: the same weights on every machine and thread count (benchmark.core.threads)
    with seeded(seed), torch.enable_grad(), single_threaded():  # training may start lazily inside no_grad code
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            correct = seen = 0
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                out = output_fn(model, to_input(images_u8[idx]))
                loss = sum(F.cross_entropy(out[k], targets[k][idx]) for k in targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                first = next(iter(targets))
                correct += int((out[first].argmax(1) == targets[first][idx]).sum())
                seen += idx.numel()
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", **{f"{first}_acc": f"{correct / seen:.3f}"})
    bar.close()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images_u8: Tensor, output_fn: OutputFn, batch_size: int = 500) -> dict[str, Tensor]:
    """Argmax predictions per output name over uint8 images."""
    was_training = model.training
    model.eval()
    preds: dict[str, list[Tensor]] = {}
    for start in range(0, images_u8.shape[0], batch_size):
        out = output_fn(model, to_input(images_u8[start:start + batch_size]))
        for k, v in out.items():
            preds.setdefault(k, []).append(v.argmax(1))
    model.train(was_training)
    return {k: torch.cat(v) for k, v in preds.items()}


# Modules whose code determines trained weights (plus the model's own module): the world's
# images, classes and training loop. Other edits keep the cached weights valid.
WORLD_CODE = ("benchmark.sources.world.generator", "benchmark.sources.world.dataset", "benchmark.sources.world.classes",
              "benchmark.sources.world.training")


def weights_spec(model: nn.Module, spec: Mapping[str, Any]) -> dict:
    """``spec`` plus the fingerprint of the code that trains ``model`` (the cache spec)."""
    return {**spec, "code": closure_fingerprint(*WORLD_CODE, type(model).__module__)}


def weights_path(name: str, spec: Mapping[str, Any]) -> Path:
    """Where the weights for ``spec`` are cached."""
    return cache_root() / "world" / f"{name}-{spec_key({'name': name, **spec})}.safetensors"


def load_weights(path: Path | str, spec: Mapping[str, Any] | None = None) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(state dict, metadata) from a safetensors or torch file. With ``spec`` (a cache
    entry): None when the file is missing, unreadable, fails its checksum or was stored for
    another spec (with a warning in the last three cases). Without: a user's file, whose
    errors name it."""
    from benchmark.storage.checkpoints import CheckpointError

    path = Path(path)
    if spec is not None:
        found = load_entry(path, canonical_json(spec), what="cached weights")
        if found is None:
            return None
        state, raw_meta = found
        return state, json.loads(raw_meta.get("info", "{}"))
    if not path.exists():
        raise MissingFileError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as f:
                raw_meta = f.metadata() or {}
            state = load_file(str(path))
        else:
            state, raw_meta = torch.load(path, map_location="cpu", weights_only=True), {}
    except Exception as err:  # torch and safetensors raise many types for a bad file
        raise CheckpointError(f"cannot read weights file {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return state, json.loads(raw_meta.get("info", "{}"))


def save_weights(path: Path, spec: Mapping[str, Any], model: nn.Module, info: Mapping[str, Any]) -> Path:
    """Write the model's state dict atomically with its spec, info and checksum as metadata."""
    return save_entry(Path(path), canonical_json(spec), model.state_dict(),
                      {"info": json.dumps(dict(info), sort_keys=True)})


def load_or_train(name: str, model: nn.Module, spec: Mapping[str, Any], weights: str | Path | None,
                  train: Callable[[], tuple[nn.Module, dict[str, Any]]]) -> nn.Module:
    """``model`` in eval mode with weights from the file ``weights`` if given, else from the
    cache entry of ``spec`` (plus the code fingerprint), else from ``train()`` (then
    cached). ``model.world_info`` holds the recorded training info and the weights path."""
    from benchmark.storage.checkpoints import load_state

    if weights is not None:
        state, info = load_weights(weights)  # type: ignore[misc]
        path = Path(weights)
    else:
        spec = weights_spec(model, spec)
        path = weights_path(name, spec)
        ensure_root(path.parent.parent)  # a foreign or unwritable root fails before training
        found = load_weights(path, spec)
        if found is None:
            model, info = train()
            save_weights(path, spec, model, info)
            state = None
        else:
            state, info = found
    if state is not None:
        load_state(model, state, path, name)
    model.world_info = {**info, "weights": str(path)}
    return model.eval()
