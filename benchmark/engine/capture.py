"""The capture engine: ONE streaming pass over a dataset for a model and a layer.

Per batch it runs one forward (and, when importance counters are requested, one backward
from the true-class logits to the layer output only) and folds the results into running
statistics (:class:`benchmark.engine.layer_stats.LayerStats`) without keeping per-image tensors.
With ``sample_vectors = n > 0`` the same pass keeps a seeded uniform sample of n of the layer's
output vectors (one C-dim vector per image and spatial position; what the dictionary methods
train on): every vector gets a key drawn from a generator seeded by (``sample_seed``, image
index), and the n smallest keys are kept (bottom-n sampling, a reservoir whose content does
not depend on the batch size, the batch order or how the data are sharded). The pass can run in shards (:func:`capture_partial` on whole batches,
:func:`merge_partials`), over processes with ``torch.distributed``
(:mod:`benchmark.engine.sharding`); the merged statistics are the single-process ones. The
pass is cached by (model weights, layer, dataset, parameters, code version and a
fingerprint of this module's code). NaN or inf in logits, activations or attributions stop
the pass with an error naming the model, layer and images (:mod:`benchmark.core.finite`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from benchmark.core.finite import FiniteWatch
from benchmark.engine import sharding
from benchmark.engine.layer_stats import LayerStats
from benchmark.engine.layers import eval_mode, frozen_parameters, get_layer
from benchmark.sources.datasets import ImageDataset
from benchmark.storage.cache import Cache, model_fingerprint, spec_key


@dataclass(frozen=True)
class CaptureSpec:
    """What to capture. ``tau=None`` skips the importance counters (and the backward)."""

    layer: str
    top_k: int = 100
    tau: float | None = 0.03
    batch_size: int = 64
    autocast_bf16: bool = False  # GPU option: forward/backward in bfloat16 autocast
    sample_vectors: int = 0  # layer output vectors kept in a seeded uniform sample (0 = none)
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if self.sample_vectors < 0:
            raise ValueError(f"sample_vectors must be >= 0, got {self.sample_vectors}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tau is not None and not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1] or None, got {self.tau}")


def _merge_topk(values: Tensor, ids: Tensor, new_values: Tensor, new_ids: Tensor, k: int):
    """Keep the k largest per row; ties go to the smaller dataset index (deterministic)."""
    all_values = torch.cat([values, new_values], dim=1)
    all_ids = torch.cat([ids, new_ids], dim=1)
    by_id = torch.argsort(all_ids, dim=1, stable=True)
    all_values, all_ids = all_values.gather(1, by_id), all_ids.gather(1, by_id)
    order = torch.argsort(-all_values, dim=1, stable=True)[:, :k]
    return all_values.gather(1, order), all_ids.gather(1, order)


SAMPLE_KEY_STRIDE = 1 << 31  # generator seed of an image's keys: sample_seed * stride + image index


def sample_keys(seed: int, image_id: int, positions: int) -> Tensor:
    """(positions,) float64 keys of one image's vectors, in [0, 1): the same on every machine."""
    g = torch.Generator().manual_seed(int(seed) * SAMPLE_KEY_STRIDE + int(image_id))
    return torch.rand(positions, generator=g, dtype=torch.float64)


class VectorSample:
    """Bottom-n sample of (image, position) vectors by their keys (:func:`sample_keys`)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = int(size), int(seed)
        self.keys = torch.empty(0, dtype=torch.float64)
        self.vectors: Tensor | None = None
        self.ids = torch.empty(0, dtype=torch.long)
        self.positions = torch.empty(0, dtype=torch.long)

    def add(self, ids: Tensor, z_flat: Tensor) -> None:
        """Offers the vectors ``z_flat`` (B, C, HW) of images ``ids`` (B,)."""
        B, C, HW = z_flat.shape
        keys = torch.cat([sample_keys(self.seed, int(i), HW) for i in ids.tolist()])
        take = torch.arange(B * HW)
        if self.keys.numel() >= self.size:  # full: only keys below the current largest can enter
            take = take[keys < self.keys.max()]
        if take.numel() == 0:
            return
        vectors = z_flat.detach().float().permute(0, 2, 1).reshape(B * HW, C)[take.to(z_flat.device)].cpu()
        new_ids = ids.cpu().repeat_interleave(HW)[take]
        new_pos = torch.arange(HW).repeat(B)[take]
        all_keys = torch.cat([self.keys, keys[take]])
        order = torch.argsort(all_keys, stable=True)[:self.size]
        stack = vectors if self.vectors is None else torch.cat([self.vectors, vectors])
        self.keys, self.vectors = all_keys[order], stack[order]
        self.ids = torch.cat([self.ids, new_ids])[order]
        self.positions = torch.cat([self.positions, new_pos])[order]

    def state(self) -> dict[str, Tensor]:
        """The kept vectors with their keys (what :func:`merge_samples` combines)."""
        assert self.vectors is not None, "no vector was offered"
        return dict(sample_keys=self.keys, sample_vectors=self.vectors, sample_ids=self.ids,
                    sample_positions=self.positions)


def merge_samples(states: list[dict[str, Tensor]], size: int) -> dict[str, Tensor]:
    """The bottom-``size`` sample of the union of shards' samples (each a :meth:`VectorSample.state`),
    ordered by (image, position): ``sample_vectors`` (n, C) float32, ``sample_ids`` and
    ``sample_positions`` (n,) long. Keys are unique per (image, position), so the result is the
    single-process sample whatever the sharding."""
    keys = torch.cat([s["sample_keys"] for s in states])
    keep = torch.argsort(keys, stable=True)[:size]
    ids = torch.cat([s["sample_ids"] for s in states])[keep]
    positions = torch.cat([s["sample_positions"] for s in states])[keep]
    vectors = torch.cat([s["sample_vectors"] for s in states])[keep]
    order = torch.argsort(ids * (1 << 32) + positions)
    return dict(sample_vectors=vectors[order].contiguous(), sample_ids=ids[order].contiguous(),
                sample_positions=positions[order].contiguous())


class _Accumulator:
    def __init__(self, num_classes: int, spec: CaptureSpec):
        self.spec, self.T = spec, num_classes
        self.ready = False
        self.sample = VectorSample(spec.sample_vectors, spec.sample_seed) if spec.sample_vectors else None

    def _init(self, c_in: int, c_out: int, device: torch.device) -> None:
        # every accumulator lives on the compute device: no host-device sync per batch
        f64, T = torch.float64, self.T
        self.counts = torch.zeros(T, dtype=torch.long, device=device)
        self.input_sum = torch.zeros(T, c_in, dtype=f64, device=device)
        self.output_sum = torch.zeros(T, c_out, dtype=f64, device=device)
        empty_v = torch.empty(c_out, 0, device=device)
        empty_i = torch.empty(c_out, 0, dtype=torch.long, device=device)
        self.top = {"max": (empty_v, empty_i), "mean": (empty_v.clone(), empty_i.clone())}
        if self.spec.tau is not None:
            self.importance = torch.zeros(T, c_out, dtype=torch.long, device=device)
            self.attribution = torch.zeros(T, c_out, dtype=f64, device=device)
        self.ready = True

    def add(self, ids: Tensor, labels: Tensor, x_sum: Tensor, z: Tensor, attribution: Tensor | None) -> None:
        if not self.ready:
            self._init(x_sum.shape[1], z.shape[1], z.device)
        labels, ids = labels.to(z.device), ids.to(z.device)
        z_flat = z.detach().flatten(2).float()
        if self.sample is not None:
            self.sample.add(ids, z_flat)
        self.counts += torch.bincount(labels, minlength=self.T)
        self.input_sum.index_add_(0, labels, x_sum.double())
        self.output_sum.index_add_(0, labels, z_flat.sum(-1).double())
        ids_row = ids[None, :].expand(z.shape[1], -1)
        for name, values in (("max", z_flat.amax(-1)), ("mean", z_flat.mean(-1))):
            v, i = self.top[name]
            self.top[name] = _merge_topk(v, i, values.T, ids_row, self.spec.top_k)
        if attribution is not None:
            a = attribution.detach().double()  # (B, C_out)
            threshold = self.spec.tau * a.clamp(min=0).sum(1, keepdim=True)  # type: ignore[operator]  # tau is set on this path
            self.importance.index_add_(0, labels, (a >= threshold).long())
            self.attribution.index_add_(0, labels, a)

    def state(self) -> dict[str, Tensor]:
        """The associative state of the images seen (a shard's partial statistics, on the CPU);
        empty when no batch was seen."""
        if not self.ready:
            return {}
        out = dict(class_counts=self.counts, input_sum=self.input_sum, output_sum=self.output_sum,
                   top_max_values=self.top["max"][0], top_max_ids=self.top["max"][1],
                   top_mean_values=self.top["mean"][0], top_mean_ids=self.top["mean"][1])
        if self.spec.tau is not None:
            out.update(importance_counts=self.importance, attribution_sum=self.attribution)
        if self.sample is not None:
            out.update(self.sample.state())
        return {k: v.cpu() for k, v in out.items()}


SUMMED = ("class_counts", "input_sum", "output_sum", "importance_counts", "attribution_sum")


def merge_partials(parts: list[dict[str, Tensor]], spec: CaptureSpec) -> LayerStats:
    """The statistics of the union of disjoint shards (each a :func:`capture_partial`): sums
    and counts add, top-k lists merge with the same tie rule, vector samples merge by key. One
    shard gives exactly its own statistics; shards computed in the single-process batches give
    the single-process statistics (top-k, counts and samples equal; float64 sums to rounding)."""
    parts = [p for p in parts if p]
    if not parts:
        raise RuntimeError(f"layer {spec.layer!r} was never called during the forward pass")
    merged: dict[str, Any] = {}
    for name in SUMMED:
        if name in parts[0]:
            total = parts[0][name].clone()
            for p in parts[1:]:
                total += p[name]
            merged[name] = total
    for name in ("max", "mean"):
        values, ids = parts[0][f"top_{name}_values"], parts[0][f"top_{name}_ids"]
        for p in parts[1:]:
            values, ids = _merge_topk(values, ids, p[f"top_{name}_values"], p[f"top_{name}_ids"], spec.top_k)
        merged[f"top_{name}_values"], merged[f"top_{name}_ids"] = values, ids
    if spec.tau is not None:
        merged["tau"] = spec.tau
    if spec.sample_vectors:
        merged.update(merge_samples(parts, spec.sample_vectors))
    return LayerStats(**merged)


class _IndexedDataset(torch.utils.data.Dataset):
    """(dataset index, image, label) of the images ``indices`` of ``base``."""

    def __init__(self, base: ImageDataset, indices: list[int]):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        image, label = self.base[i]
        return i, image, label


def shard_indices(total: int, batch_size: int, shard: tuple[int, int]) -> list[int]:
    """The images of shard ``(index, count)``: the single-process batches b with
    b % count == index, whole. Each image is computed in the same batch as in the
    single-process pass, so its per-image values are the same bit for bit."""
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    return [i for b in range(index, -(-total // batch_size), count)
            for i in range(b * batch_size, min((b + 1) * batch_size, total))]


def capture(
    model: nn.Module,
    dataset: ImageDataset,
    spec: CaptureSpec,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    model_name: str | None = None,
) -> LayerStats:
    """Run the streaming pass and return the statistics (no cache; see :func:`cached_capture`).
    Non-finite logits, activations or attributions stop it with a
    :class:`benchmark.core.finite.NonFiniteError` naming ``model_name``, the layer and the images."""
    return merge_partials([capture_partial(model, dataset, spec, device, num_workers, progress, model_name)], spec)


def capture_partial(
    model: nn.Module,
    dataset: ImageDataset,
    spec: CaptureSpec,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    model_name: str | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Tensor]:
    """The streaming pass over the images of one shard (:func:`shard_indices`; ``(0, 1)`` =
    every image): its associative state, which :func:`merge_partials` combines."""
    if len(dataset) == 0:
        raise ValueError("cannot capture statistics of an empty dataset")
    indices = shard_indices(len(dataset), spec.batch_size, shard)
    layer = get_layer(model, spec.layer)
    device = torch.device(device)
    acc = _Accumulator(dataset.num_classes, spec)
    box: dict[str, Tensor] = {}
    need_grad = spec.tau is not None
    watch = FiniteWatch(len(dataset), device)

    def pre_hook(_module: nn.Module, args: tuple) -> None:
        # summed BEFORE the layer runs: an in-place layer (ReLU(inplace=True)) overwrites its input
        box["x_sum"] = args[0].detach().flatten(2).sum(-1)

    def hook(_module: nn.Module, args: tuple, output: Tensor):
        if need_grad:  # start the graph at the layer output: backward stops here
            output = output.detach().requires_grad_(True)
        box["z"] = output
        return output

    loader = DataLoader(_IndexedDataset(dataset, indices), batch_size=spec.batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    handles = [layer.register_forward_pre_hook(pre_hook), layer.register_forward_hook(hook)]
    try:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.autocast_bf16)
        with eval_mode(model), frozen_parameters(model), torch.set_grad_enabled(need_grad), autocast:
            for ids, images, labels in tqdm(loader, desc=f"capture {spec.layer}", disable=not progress, unit="batch"):
                images = images.to(device, non_blocking=True)
                labels_dev = labels.to(device, non_blocking=True)
                logits = model(images)
                watch.add("activations", box["z"], ids)
                watch.add("logits", logits, ids)
                attribution = None
                if need_grad:
                    z = box["z"]
                    true_logit = logits.gather(1, labels_dev[:, None]).sum()
                    (grad,) = torch.autograd.grad(true_logit, z)
                    attribution = (z.detach().float() * grad.float()).flatten(2).sum(-1)
                    watch.add("attributions (activation x gradient)", attribution, ids)
                acc.add(ids, labels, box["x_sum"], box["z"], attribution)
    finally:
        for handle in handles:
            handle.remove()
    if indices and not acc.ready:
        raise RuntimeError(f"layer {spec.layer!r} was never called during the forward pass")
    watch.check(model_name or type(model).__name__, spec.layer)
    return acc.state()


def capture_spec_key(model: nn.Module, dataset: ImageDataset, spec: CaptureSpec) -> dict:
    """The cache spec of a capture: model weights, layer, dataset and parameters."""
    return {"model": model_fingerprint(model), "dataset": dataset.fingerprint, **asdict(spec)}


def cached_capture(
    model: nn.Module,
    dataset: ImageDataset,
    spec: CaptureSpec,
    cache: Cache | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    model_name: str | None = None,
) -> LayerStats:
    """:func:`capture`, served from the cache when the same request was computed before.
    Inside a process group (:mod:`benchmark.engine.sharding`, a torchrun launch) every rank
    captures its shard, the partial statistics are gathered and merged on every rank, and rank
    0 writes the entry; the ranks must ask for the same capture (checked)."""
    cache = cache if cache is not None else Cache()
    key = capture_spec_key(model, dataset, spec)
    rank, size = sharding.world()
    if size == 1:
        tensors = cache.get_or_compute(
            "capture", key,
            lambda: capture(model, dataset, spec, device, num_workers, progress, model_name).to_tensors())
        return LayerStats.from_tensors(tensors)
    what = f"the sharded capture of {model_name or type(model).__name__}:{spec.layer}"
    found = cache.load("capture", key)
    asked = sharding.all_gather((spec_key(key), found is not None), what)
    if len({request for request, _ in asked}) > 1:
        raise sharding.ShardedCaptureError(
            f"rank {rank}: the ranks ask for different captures of {spec.layer!r} (other model weights, data or "
            f"parameters); every rank must run the same config and code")
    if found is not None and all(hit for _, hit in asked):
        cache.hits += 1
        return LayerStats.from_tensors(found)
    cache.misses += 1
    part = capture_partial(model, dataset, spec, device, num_workers, progress and rank == 0, model_name,
                           shard=(rank, size))
    tensors = merge_partials(sharding.all_gather(part, what), spec).to_tensors()
    if rank == 0:
        cache.save("capture", key, tensors)
    sharding.barrier(what)
    return LayerStats.from_tensors(tensors)
