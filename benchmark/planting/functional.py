"""Functional planting: after merging, teach the network to USE the planted channel.

:func:`benchmark.planting.merge.plant` merges channel b into slot a, but the layers after it were
trained to read slot a as channel a only, so on images of b's concept the planted channel
fires without mattering to the decision (measured before this step: the relevance filter
of Hesse et al. 2025 kept no image of the second concept on most planted channels).

:func:`plant_functional` therefore fine-tunes, on the fit data, the parameters of every
module registered AFTER the planted layer (for the world CNN and ResNets: the rest of the
network, the block's own batch norm and shortcut included), with the planted layer and
everything before it frozen, so the planted channel stays exactly part_a + part_b (the
parts are computed from the layer input, which does not change; checked after training).

Schedule (``FunctionalSchedule``): Adam, ``steps`` mini-batches of ``batch_size`` fit
images drawn by a generator seeded with ``seed``, cross-entropy on the true labels, the
model in eval mode (batch-norm statistics fixed: only weights move). While training, the
layer's OTHER channels are dropped (inverted dropout, probability ``dropout``; the
planted slots are never dropped), so the network must route the planted classes through
the planted channels. No dropout at evaluation. The tuned weights are cached by
(planted model, layer, pairs, data, schedule); the result is deterministic per seed.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.threads import single_threaded
from benchmark.engine.layers import eval_mode, get_layer
from benchmark.sources.datasets import ImageDataset
from benchmark.storage.cache import Cache, model_fingerprint

FUNCTIONAL_VERSION = 1


@dataclass(frozen=True)
class FunctionalSchedule:
    """Fine-tuning of the layers after the planted one (module docstring); steps = 0: none."""

    steps: int = 150
    batch_size: int = 128
    lr: float = 3e-3
    dropout: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def downstream_modules(model: nn.Module, layer: str) -> list[str]:
    """Names of the modules registered after ``layer`` (excluding its own submodules)."""
    names = [n for n, _ in model.named_modules()]
    if layer not in names:
        get_layer(model, layer)  # raises the usual error listing the layers
    after = names[names.index(layer) + 1:]
    return [n for n in after if not n.startswith(layer + ".")]


def _trainable(model: nn.Module, layer: str) -> list[tuple[str, nn.Parameter]]:
    modules = dict(model.named_modules())
    out, seen = [], set()
    for name in downstream_modules(model, layer):
        for pname, p in modules[name].named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                out.append((f"{name}.{pname}" if name else pname, p))
    return out


@single_threaded()  # the same fine-tuned weights whatever the thread count (benchmark.core.threads)
def finetune_downstream(model: nn.Module, layer: str, keep: Sequence[int], fit: ImageDataset,
                        schedule: FunctionalSchedule, device: torch.device | str = "cpu",
                        progress: bool = False) -> nn.Module:
    """Train ``model`` (the caller's own planted copy) IN PLACE as the module docstring says.

    ``keep`` are the layer's channels never dropped (the planted slots). Returns the model,
    in eval mode, with every ``requires_grad`` flag as it was."""
    if schedule.steps == 0:
        return model
    conv = get_layer(model, layer)
    params = _trainable(model, layer)
    if not params:
        raise ValueError(f"no parameters after layer {layer!r}: there is nothing to fine-tune")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    trainable = {id(p) for _, p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    prefixes = tuple(n + "." for n in downstream_modules(model, layer) if n)
    upstream = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(prefixes)}
    gen = torch.Generator().manual_seed(schedule.seed)
    keep_idx = torch.as_tensor(list(keep), dtype=torch.long)
    state: dict[str, torch.Tensor] = {}

    def drop(_module, _args, output):
        mask = state.get("mask")
        return output if mask is None else output * mask.to(output.dtype)[:, :, None, None]

    handle = conv.register_forward_hook(drop)
    opt = torch.optim.Adam([p for _, p in params], lr=schedule.lr)
    from tqdm.auto import tqdm

    try:
        with eval_mode(model), torch.enable_grad():
            for _ in tqdm(range(schedule.steps), desc=f"functional planting {layer}", disable=not progress,
                          unit="step", leave=False):
                idx = torch.randint(len(fit), (schedule.batch_size,), generator=gen)
                images = fit.images(idx).to(device)
                labels = fit.labels[idx].to(device)
                c = conv.out_channels
                if schedule.dropout > 0:
                    keep_mask = (torch.rand(images.shape[0], c, generator=gen) >= schedule.dropout).float()
                    keep_mask /= 1.0 - schedule.dropout
                    keep_mask[:, keep_idx] = 1.0
                    state["mask"] = keep_mask.to(device)
                loss = F.cross_entropy(model(images), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        handle.remove()
        state.clear()
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
    after = model.state_dict()
    changed = [k for k, v in upstream.items() if not torch.equal(v, after[k])]
    if changed:
        raise RuntimeError(f"functional planting changed parameters at or before {layer!r}: {changed[:5]}")
    return model.eval()


def functional_spec(planted: nn.Module, layer: str, keep: Sequence[int], fit: ImageDataset,
                    schedule: FunctionalSchedule) -> dict:
    """Everything that determines the fine-tuned weights (the cache key)."""
    return {"version": FUNCTIONAL_VERSION, "model": model_fingerprint(planted), "layer": layer,
            "keep": sorted(int(c) for c in keep), "fit": fit.fingerprint, **asdict(schedule)}


def cached_finetune(planted: nn.Module, layer: str, keep: Sequence[int], fit: ImageDataset,
                    schedule: FunctionalSchedule, cache: Cache | None = None,
                    device: torch.device | str = "cpu", progress: bool = False) -> nn.Module:
    """A fine-tuned COPY of ``planted`` (:func:`finetune_downstream`), its weights served
    from the cache when the same request was computed before. ``planted`` is not changed,
    and its :class:`~benchmark.core.types.PlantedTruth` stays exact for the copy: the parts are
    computed from the layer input, which the fine-tuning leaves as it was."""
    if schedule.steps == 0:
        return planted
    cache = cache if cache is not None else Cache()
    spec = functional_spec(planted, layer, keep, fit, schedule)
    tuned = copy.deepcopy(planted)
    state = cache.get_or_compute(
        "functional_planting", spec,
        lambda: {k: v.detach().cpu().contiguous() for k, v in
                 finetune_downstream(copy.deepcopy(planted), layer, keep, fit, schedule, device,
                                     progress).state_dict().items()})
    with torch.no_grad():
        tuned.load_state_dict({k: v.to(device) for k, v in state.items()})
    return tuned.eval()
