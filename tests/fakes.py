"""Every fake a test needs, in one place: in-memory datasets, tiny CNNs, a fake ImageNet
folder, a tiny registered model/dataset with a run config over them, and the contract
context on which every registered method and metric must run (``contract_world``)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from benchmark.core.config import load_config
from benchmark.core.registry import DATASETS, MODELS
from benchmark.sources.datasets import ClassInfo, ImageDataset


class TensorImages(ImageDataset):
    """An ImageDataset over given tensors (classes get placeholder WordNet ids)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None):
        self.data = images.float()
        self.labels = labels.long()
        n = int(num_classes if num_classes is not None else labels.max() + 1)
        self.classes = tuple(ClassInfo(i, f"n{i:08d}", f"class{i}.n.01", f"class {i}") for i in range(n))
        self.fingerprint = "tensors-" + hashlib.sha256(
            self.data.numpy().tobytes() + self.labels.numpy().tobytes()).hexdigest()[:16]

    def __getitem__(self, index: int):
        return self.data[index], int(self.labels[index])


def random_images(n: int = 24, num_classes: int = 4, size: int = 16, seed: int = 0) -> TensorImages:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = torch.arange(n) % num_classes
    return TensorImages(images, labels, num_classes)


class TinyNet(nn.Module):
    """conv3x3 -> ReLU -> conv1x1 (the 'layer', linear, no bias) -> ReLU -> pool -> fc."""

    def __init__(self, num_classes: int = 4, width: int = 8, out: int = 6, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, out, 1, bias=False)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out, num_classes)

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def tiny_context(layer: str = "conv2", n: int = 48, num_classes: int = 4, seed: int = 0, top_k: int = 10, tau=0.05):
    """A complete Context over TinyNet and random images (fit and held-out differ)."""
    from benchmark.core.types import Context
    from benchmark.engine.capture import CaptureSpec, capture

    model = TinyNet(num_classes=num_classes, seed=seed).eval()
    fit = random_images(n=n, num_classes=num_classes, seed=seed)
    heldout = random_images(n=n // 2, num_classes=num_classes, seed=seed + 100)
    stats = capture(model, fit, CaptureSpec(layer, top_k=top_k, tau=tau, sample_vectors=2048), progress=False)
    return Context(model=model, model_name="tiny", layer=layer, fit=fit, heldout=heldout,
                   stats=stats, batch_size=16, seed=seed)


def planted_world_context(world_model, world_val, fit: range, heldout: range, num_pairs: int, batch_size: int):
    """(context, targets): ``num_pairs`` plainly planted channels of the trained world CNN at its
    default layer (partners from unrelated class groups, each part's concept its channel's top
    class), fit and held-out data the given index ranges of ``world_val``."""
    from benchmark.core.types import Context, Target
    from benchmark.engine.capture import CaptureSpec, capture
    from benchmark.planting.merge import choose_channel_pairs, class_selectivity, plant
    from benchmark.sources.datasets import Subset
    from benchmark.sources.world import DEFAULT_LAYER, WORLD_CLASSES

    layer = DEFAULT_LAYER
    fit_data, heldout_data = Subset(world_val, fit), Subset(world_val, heldout)
    group = {c.info.index: c.group for c in WORLD_CLASSES}
    base = capture(world_model, fit_data, CaptureSpec(layer, tau=None), progress=False)
    pairs = choose_channel_pairs(base, num_pairs, unrelated=lambda s, t: group[s] != group[t])
    top = {s.channel: s.top_class for s in class_selectivity(base)}
    classes = [((top[a],), (top[b],)) for a, b in pairs]
    model, truth = plant(world_model, layer, pairs, classes=classes)
    stats = capture(model, fit_data, CaptureSpec(layer, top_k=100, tau=0.03, sample_vectors=8192), progress=False)
    ctx = Context(model=model, model_name="world_cnn", layer=layer, fit=fit_data, heldout=heldout_data,
                  stats=stats, batch_size=batch_size, planted=truth)
    return ctx, [Target("world_cnn", layer, a, concepts=c) for (a, _), c in zip(pairs, classes)]


# --- nets and data with known ARVs (engine.relevance, methods.arv_surgery) -------------
class StridedNet(nn.Module):
    """conv3x3 -> ReLU -> residual block (3x3, ReLU, 1x1, add, ReLU) -> conv3x3/s2/p1 with
    bias (the 'layer') -> ReLU -> pool -> fc."""

    def __init__(self, num_classes: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.block = Block(6)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=True)
        self.fc = nn.Linear(5, num_classes)

    def forward(self, x):
        x = self.block(torch.relu(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv_a = nn.Conv2d(width, width, 3, padding=1)
        self.conv_b = nn.Conv2d(width, width, 1)

    def forward(self, x):
        return torch.relu(x + self.conv_b(torch.relu(self.conv_a(x))))


def unbalanced_images(seed: int = 0, size: int = 12) -> TensorImages:
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 5 + [3] * 4)
    g = torch.Generator().manual_seed(seed)
    return TensorImages(torch.randn(len(labels), 3, size, size, generator=g), labels, 4)


def layer_input(model, layer: nn.Module, image):
    box = {}

    def hook(_module, args, _output):
        box["x"] = args[0].detach()

    handle = layer.register_forward_hook(hook)
    with torch.no_grad():
        model(image[None])
    handle.remove()
    return box["x"]


def literal_arv(model, layer_in: nn.Module, span, dataset, classes, channel):
    """Per image: x = input of layer_in; a_j = sum_hw x_j * d(sum_hw span(x)_c)/dx_j; mean."""
    vectors = []
    for n in range(len(dataset)):
        image, label = dataset[n]
        if label not in classes:
            continue
        x = layer_input(model, layer_in, image).requires_grad_(True)
        z = span(x)
        (grad,) = torch.autograd.grad(z[0, channel].sum(), x)
        vectors.append((grad * x).sum((2, 3))[0].double())
    return torch.stack(vectors).mean(0)


# --- a fake ImageNet folder (sources.zoo.imagenet) -------------------------------------
TENCH, GOLDFISH, CARDOON = "n01440764", "n01443537", "n07730033"


def make_fake_imagenet(root, split="val", counts=None, size=(40, 30)):
    """``root/split/<wnid>/img_<i>.JPEG``: solid-colour JPEGs, ``counts`` per wnid."""
    counts = counts or {TENCH: 2, GOLDFISH: 1, CARDOON: 2}
    for k, (wnid, n) in enumerate(sorted(counts.items())):
        folder = root / split / wnid
        folder.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (40 * k, 100 + 20 * i, 200)).save(folder / f"img_{i}.JPEG", quality=95)
    return root


# --- a tiny registered model and dataset, and a run config over them (run, cli) --------
NUM_CLASSES = 16


def _world_classes():
    from benchmark.sources.world.classes import CLASS_INFOS  # 16 real WordNet synsets

    return CLASS_INFOS


@MODELS.register("tiny_test_net", description="test-only TinyNet")
def _tiny_model(seed: int = 0, **_):
    model = TinyNet(num_classes=NUM_CLASSES, width=12, out=8, seed=seed).eval()
    model.default_layer = "conv2"
    return model


@DATASETS.register("tiny_test_images", description="test-only random images of 16 WordNet classes")
def _tiny_images(split: str = "train", seed: int = 0, **_):
    g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
    n = 96 if split == "train" else 64
    data = TensorImages(torch.randn(n, 3, 12, 12, generator=g), torch.arange(n) % NUM_CLASSES, NUM_CLASSES)
    data.classes = _world_classes()
    data.fingerprint += f"-{split}"
    return data


CONFIG = """
name = "tiny"
seed = 0
batch_size = 32
output_dir = "unused"
methods = ["arv_surgery", "pure", "activation_kmeans", "identity", "random_split", "oracle"]
metrics = ["activation_ratio", "residual_energy", "output_fidelity", "planted_recovery", "wordnet_gamma"]

[model]
name = "tiny_test_net"

[data]
dataset = "tiny_test_images"

[capture]
top_k = 12
tau = 0.05

[tracks.planted]
num_channels = 1
wordnet_threshold = 0.6
functional_steps = 4            # a random net: the filter is exercised in test_planted_validity.py
functional_batch_size = 16
min_response = -1e9
min_relevance_pass = 0.0
min_part_share = 0.0

[tracks.pairs]
source = "given"
pairs = [[0, [0], [5]], [1, [1], [6]]]

[tracks.layer]
layer = "act2"
num_channels = 2

[tracks.detection]
p = 0.1
max_pairs = 12

[figures]
fvis_steps = 8

[method_params.pure]
n_ref = 10
n_init = 2
[method_params.activation_kmeans]
n_ref = 10
[method_params.identity]
n_ref = 10
[method_params.random_split]
n_ref = 10
[method_params.oracle]
n_ref = 10
"""


def tiny_config(tmp_path: Path, **overrides):
    path = tmp_path / "tiny.toml"
    path.write_text(CONFIG)
    return load_config(str(path), overrides)


# --- the contract world: every situation of benchmark.core.plugins.SITUATIONS offered -----
# CONTRACT_PAIR: a pair whose merged channel passes activation_ratio's relevance filter (tau = 0.03)
# on some held-out images of both concepts with this seeded random TinyNet (found by trying pairs)
CONTRACT_LAYER, CONTRACT_PAIR, CONTRACT_TOP_K, CONTRACT_N_REF = "conv2", (3, 6), 24, 16


def _planted_context(fit, heldout, num_classes: int):
    """TinyNet with channels CONTRACT_PAIR merged into one (concepts: each part's top class)."""
    from benchmark.core.types import Context, Target
    from benchmark.engine.capture import CaptureSpec, capture
    from benchmark.planting.merge import class_selectivity, plant

    base = TinyNet(num_classes=num_classes, width=12, out=8, seed=0).eval()
    sel = {s.channel: s for s in class_selectivity(capture(base, fit, CaptureSpec(CONTRACT_LAYER, tau=None),
                                                           progress=False))}
    a, b = CONTRACT_PAIR
    class_a = sel[a].top_class
    class_b = sel[b].top_class if sel[b].top_class != class_a else (class_a + 1) % num_classes
    concepts = ((class_a,), (class_b,))
    model, truth = plant(base, CONTRACT_LAYER, [CONTRACT_PAIR], classes=[concepts])
    stats = capture(model, fit, CaptureSpec(CONTRACT_LAYER, top_k=CONTRACT_TOP_K, tau=0.05, sample_vectors=4096),
                    progress=False)
    ctx = Context(model=model, model_name="tiny", layer=CONTRACT_LAYER, fit=fit, heldout=heldout, stats=stats,
                  batch_size=16, seed=0, planted=truth)
    return ctx, Target("tiny", CONTRACT_LAYER, a, concepts=concepts)


_CONTRACT: dict = {}


def contract_world():
    """(context, target) on which every registered plug-in must apply: synthetic-world images
    (160 of the validation split: 96 fit, 64 held-out), a planted channel with its truth, a
    target naming its two concepts. Built once per process; treat it as read-only."""
    if "world" not in _CONTRACT:
        from benchmark.sources.datasets import Subset
        from benchmark.sources.world import SyntheticWorld

        world = SyntheticWorld("val", size=160, seed=0)
        _CONTRACT["world"] = _planted_context(Subset(world, range(96)), Subset(world, range(96, 160)),
                                              world.num_classes)
    return _CONTRACT["world"]


def lacking(situation: str):
    """(context, target) of the contract world without ONE situation (see SITUATIONS)."""
    import dataclasses

    ctx, target = contract_world()
    if situation == "concepts":
        return ctx, dataclasses.replace(target, concepts=None)
    if situation == "planted_truth":
        return dataclasses.replace(ctx, planted={}), target
    if situation == "synthetic_world":
        if "random" not in _CONTRACT:
            fit = random_images(n=96, num_classes=16, size=32, seed=0)
            heldout = random_images(n=64, num_classes=16, size=32, seed=100)
            _CONTRACT["random"] = _planted_context(fit, heldout, 16)
        return _CONTRACT["random"]
    raise KeyError(f"no fake context lacks {situation!r}; add one to tests/fakes.py")


def build_plugin(cls, **overrides):
    """A plug-in with its defaults, ``n_ref`` shrunk to the contract world's size."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    shrink = {"n_ref": CONTRACT_N_REF} if "n_ref" in names else {}
    return cls(**{**shrink, **overrides})
