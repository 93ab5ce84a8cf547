"""Known answers for the dictionary methods (methods/sae.py, methods/nmf.py) and the capture
sample they train on; on planted world channels both beat random_split on the truth scores."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import methods.sae as sae_module
from benchmark.core.types import Context, NotApplicable, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import channel_activation, layer_activations
from benchmark.storage.cache import Cache
from methods.nmf import ContributionNMF, contribution_masks
from methods.random_split import RandomSplit
from methods.sae import SparseAutoencoder, train_topk_sae
from metrics.planted_recovery import PlantedRecovery
from tests.fakes import TensorImages, TinyNet, planted_world_context, random_images, tiny_context


# --- the capture sample ----------------------------------------------------------------
def test_capture_sample_does_not_depend_on_batch_size_and_holds_the_layer_vectors():
    model, data = TinyNet(num_classes=4, seed=0).eval(), random_images(n=40, seed=1)
    a = capture(model, data, CaptureSpec("conv2", tau=None, batch_size=7, sample_vectors=300, sample_seed=3),
                progress=False)
    b = capture(model, data, CaptureSpec("conv2", tau=None, batch_size=16, sample_vectors=300, sample_seed=3),
                progress=False)
    assert a.sample_vectors.shape[0] == 300
    for name in ("sample_vectors", "sample_ids", "sample_positions"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    z = layer_activations(model, "conv2", data.images(range(len(data)))).detach().flatten(2)  # (N, C, HW)
    torch.testing.assert_close(a.sample_vectors, z[a.sample_ids, :, a.sample_positions], atol=1e-6, rtol=0)
    other = capture(model, data, CaptureSpec("conv2", tau=None, sample_vectors=300, sample_seed=4), progress=False)
    assert not torch.equal(other.sample_ids * 1000 + other.sample_positions, a.sample_ids * 1000 + a.sample_positions)
    everything = capture(model, data, CaptureSpec("conv2", tau=None, sample_vectors=10 ** 6), progress=False)
    assert everything.sample_vectors.shape[0] == z.shape[0] * z.shape[2]  # asking for more keeps all


def test_a_capture_without_a_sample_makes_the_sae_say_why():
    ctx = tiny_context()
    ctx = dataclasses.replace(ctx, stats=dataclasses.replace(ctx.stats, sample_vectors=None, sample_ids=None))
    with pytest.raises(NotApplicable, match="capture.sample_vectors"):
        SparseAutoencoder(n_ref=10).fit(ctx, Target("tiny", "conv2", 1))


# --- the TopK SAE ------------------------------------------------------------------------
def test_topk_sae_recovers_the_atoms_of_one_sparse_data():
    g = torch.Generator().manual_seed(0)
    atoms = torch.linalg.qr(torch.randn(8, 8, generator=g))[0][:4]  # 4 orthonormal atoms in R^8
    which = torch.randint(0, 4, (4000,), generator=g)
    x = atoms[which] * (1.0 + torch.rand(4000, 1, generator=g))  # each vector: one atom, positive scale
    sae = train_topk_sae(x, latents=8, topk=1, steps=1500, batch_size=256, lr=1e-2, seed=0)
    cos = (atoms @ sae.w_dec.T).abs()  # (4 atoms, 8 latents), decoder rows have unit norm
    assert cos.max(1).values.min() > 0.95
    with torch.no_grad():
        x_hat = (sae.latents(x) @ sae.w_dec + sae.b_dec) * sae.scale
    assert float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()) < 0.05


def test_the_sae_is_trained_once_per_layer_and_then_read_from_the_cache(tmp_path, monkeypatch):
    calls = []
    real = train_topk_sae
    monkeypatch.setattr(sae_module, "train_topk_sae", lambda *a, **k: calls.append(1) or real(*a, **k))
    ctx = dataclasses.replace(tiny_context(), cache=Cache(tmp_path))
    method = SparseAutoencoder(n_ref=10, steps=50)
    first = [method.fit(ctx, Target("tiny", "conv2", c)) for c in (0, 1, 2)]
    assert len(calls) == 1  # one SAE for the layer, every channel's split uses it
    fresh = dataclasses.replace(ctx, memo=type(ctx.memo)())  # a new run: memo empty, cache filled
    again = method.fit(fresh, Target("tiny", "conv2", 0))
    assert len(calls) == 1
    x = ctx.heldout.images(range(6))
    assert torch.equal(first[0].activations(x), again.activations(x))
    assert all(s.recomposition == "dictionary" for s in first)


# --- NMF of input contributions ---------------------------------------------------------------
class _TwoGroups(nn.Module):
    """Image channels 0-1 (concept A) and 2-3 (concept B) summed by a 1x1 conv into one channel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 1, 1, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.5, 2.0, 1.5]).view(1, 4, 1, 1))
            self.conv.bias.fill_(0.25)
        self.head = nn.Linear(1, 2)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def _two_group_context():
    g = torch.Generator().manual_seed(0)
    n = 40
    images = torch.zeros(n, 4, 6, 6)
    labels = torch.arange(n) % 2  # even images: concept A (channels 0, 1 on); odd: concept B
    for i in range(n):
        on = (0, 1) if labels[i] == 0 else (2, 3)
        images[i, list(on)] = 0.5 + torch.rand(2, 6, 6, generator=g)
    data = TensorImages(images, labels)
    model = _TwoGroups().eval()
    stats = capture(model, data, CaptureSpec("conv", top_k=n, tau=None), progress=False)
    return Context(model=model, model_name="two_groups", layer="conv", fit=data, heldout=data, stats=stats), labels


def test_nmf_finds_the_two_input_groups_and_their_images():
    ctx, labels = _two_group_context()
    split = ContributionNMF(n_ref=40).fit(ctx, Target("two_groups", "conv", 0))
    weight = split.info["shares"]
    assert len(weight) == 2
    x = ctx.fit.images(range(len(ctx.fit)))
    with torch.no_grad():
        v, res = split.activations(x), split.residual(x)
    torch.testing.assert_close(v.sum(1) + res, channel_activation(ctx.model, "conv", 0, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(res, torch.full_like(res, 0.25))  # the bias is the residual
    active = v.abs().sum((2, 3)) > 1e-6  # (N, 2): which virtual neuron fires on which image
    owner = active.float().argmax(1)
    assert bool((active.sum(1) == 1).all()), "each image drives exactly one component"
    assert abs(float((owner == labels).float().mean()) - 0.5) == 0.5  # the components ARE the two concepts
    for group in split.reference_ids:
        assert len({int(labels[i]) for i in group}) == 1


def test_contribution_masks_sum_to_one_per_input_channel():
    masks = contribution_masks(np.array([[1.0, 0.0, 0.0, 3.0], [1.0, 2.0, 0.0, 1.0]]))
    torch.testing.assert_close(masks.sum(0), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(masks[:, 2], torch.tensor([0.5, 0.5], dtype=torch.float64))  # unused: 1/k
    torch.testing.assert_close(masks[:, 3], torch.tensor([0.75, 0.25], dtype=torch.float64))


def test_nmf_does_not_apply_to_a_block_output():
    ctx = tiny_context(layer="pool")
    with pytest.raises(NotApplicable, match="Conv2d"):
        ContributionNMF(n_ref=10).fit(ctx, Target("tiny", "pool", 0))


# --- planted world: both beat random_split on the truth ------------------------------------
@pytest.fixture(scope="module")
def planted(world_model, world_val):
    return planted_world_context(world_model, world_val, range(2000), range(2000, 3000), 3, batch_size=250)


def _truth(method, planted) -> dict[str, float]:
    ctx, targets = planted
    metric = PlantedRecovery()
    scores = [metric.score(method.fit(ctx, t), ctx) for t in targets]
    return {key: float(np.mean([s[key] for s in scores])) for key in ("recovery", "ari")}


def test_dictionary_splits_beat_random_split_on_the_planted_truth(planted):
    chance = _truth(RandomSplit(), planted)
    nmf, sae = _truth(ContributionNMF(), planted), _truth(SparseAutoencoder(), planted)
    assert nmf["recovery"] > chance["recovery"] + 0.2, (nmf, chance)  # decomposition
    assert sae["ari"] > chance["ari"] + 0.2, (sae, chance)  # assignment
