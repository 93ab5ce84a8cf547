"""A TopK sparse autoencoder split (Gao, Dupré la Tour, Tillman, Goh, Troll, Radford, Sutskever,
Leike, Wu, "Scaling and evaluating sparse autoencoders", arXiv 2406.04093, 2024), the
dictionary tool the field reaches for first when a unit is polysemantic.

The SAE (Gao et al., Eq. 1-2 and Sec. 2.3) is trained ONCE per (model, layer) on the layer's
output vectors (one C-dim vector per image and spatial position): the seeded uniform sample
the shared capture pass keeps (``context.stats.sample_vectors``, :mod:`benchmark.engine.capture`),
no second pass over the data. With x scaled by s (the root mean squared deviation per
dimension of the sample, so that training is unit-free),

    z = TopK(ReLU(W_enc (x/s - b_dec) + b_enc)),     x_hat = s (z W_dec + b_dec),

``W_dec`` rows of unit norm (renormalised after every step), ``W_enc`` initialised as the
transpose of ``W_dec`` and ``b_dec`` as the sample mean (both as Gao et al.), plain MSE loss,
Adam. Not implemented: the AuxK loss against dead latents (the fraction of latents that never
fire on the sample is reported as ``dead_latents`` in the split's info).

Split of target channel c: latent a contributes ``s z_a W_dec[a, c]`` to the channel at every
position. On the channel's fit references (``n_ref`` images with the largest max activation),
the latents are ranked by their energy on c (sum of squared contributions); the fewest that
carry ``energy_share`` of it (at least max(k) + 1, at most ``max_atoms``) are grouped into k virtual
neurons by k-means (seeded, ``n_init`` restarts) on their firing profiles (each latent's
spatially summed activation on each reference, L2-normalised: latents that fire on the same
images belong together). Virtual neuron i is the summed contribution of group i's latents;
the residual is everything else (reconstruction error, decoder bias, unselected latents), so
the virtual neurons plus the residual recompose the channel exactly. The decoder bias's share
of the channel, ``s b_dec[c]``, is a constant no latent carries; it is split evenly over the k
virtual neurons, so that the residual measures what the SAE fails to reconstruct (error and
unselected latents). ``k=None`` takes the number of concepts the target names (as
``arv_surgery`` does) and otherwise chooses k in ``k_range`` by the best silhouette of the
profiles (fit references only; ties -> smaller k).

Why not the ``overcomplete`` package (Fel et al.), which has TopK SAEs: its 0.3.0 wheel does
not import with matplotlib >= 3.9 (``overcomplete.visualization`` calls the removed
``plt.cm.get_cmap`` at import; measured with matplotlib 3.11) and pulls opencv-python and timm;
the TopK SAE is 40 lines of torch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.threads import single_threaded
from benchmark.core.types import Context, NotApplicable, Split, Target
from benchmark.engine.layers import layer_activations
from benchmark.engine.references import top_max_references
from benchmark.storage.cache import model_fingerprint
from methods._dictionary import dictionary_split, group_references
from methods._pooled import check_alive, check_target
from methods.pure import choose_k

NAME = "sae"
MEMO_SECTION, MEMO_SIZE = "sae_dictionary", 8  # context.memo: (model, layer, settings) -> trained SAE


@dataclass(frozen=True)
class SAEWeights:
    """A trained TopK SAE in the layer's units (see the module docstring)."""

    w_enc: Tensor  # (C, L)
    b_enc: Tensor  # (L,)
    w_dec: Tensor  # (L, C), unit rows
    b_dec: Tensor  # (C,)
    scale: float
    topk: int

    def latents(self, x_nc: Tensor) -> Tensor:
        """(n, L) TopK latent activations of vectors ``x_nc`` (differentiable)."""
        pre = torch.relu((x_nc / self.scale - self.b_dec.to(x_nc)) @ self.w_enc.to(x_nc) + self.b_enc.to(x_nc))
        values, index = pre.topk(self.topk, dim=1)
        return torch.zeros_like(pre).scatter(1, index, values)

    def to_tensors(self) -> dict[str, Tensor]:
        return dict(w_enc=self.w_enc, b_enc=self.b_enc, w_dec=self.w_dec, b_dec=self.b_dec,
                    scale=torch.tensor([self.scale], dtype=torch.float64), topk=torch.tensor([self.topk]))

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> "SAEWeights":
        return cls(t["w_enc"], t["b_enc"], t["w_dec"], t["b_dec"], float(t["scale"].item()), int(t["topk"].item()))


@single_threaded()  # the same dictionary whatever the thread count (benchmark.core.threads)
def train_topk_sae(vectors: Tensor, latents: int, topk: int, steps: int, batch_size: int, lr: float,
                   seed: int) -> SAEWeights:
    """Trains a TopK SAE on ``vectors`` (n, C) (float32, CPU; seeded init and batches)."""
    x = vectors.float()
    n, C = x.shape
    if n < 2:
        raise NotApplicable(f"{NAME}: the capture sample holds {n} vector(s); an SAE needs more")
    mean = x.mean(0)
    scale = float((x - mean).pow(2).mean().sqrt()) or 1.0
    xs = x / scale
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(latents, C, generator=g)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    params = dict(w_enc=w_dec.T.clone(), b_enc=torch.zeros(latents), w_dec=w_dec, b_dec=mean / scale)
    for p in params.values():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(params.values(), lr=lr)
    k = min(topk, latents)
    for _ in range(steps):
        batch = xs[torch.randint(0, n, (min(batch_size, n),), generator=g)]
        pre = torch.relu((batch - params["b_dec"]) @ params["w_enc"] + params["b_enc"])
        values, index = pre.topk(k, dim=1)
        z = torch.zeros_like(pre).scatter(1, index, values)
        loss = (z @ params["w_dec"] + params["b_dec"] - batch).pow(2).sum(1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            params["w_dec"] /= params["w_dec"].norm(dim=1, keepdim=True).clamp(min=1e-12)
    out = {name: p.detach().clone() for name, p in params.items()}
    return SAEWeights(out["w_enc"], out["b_enc"], out["w_dec"], out["b_dec"], scale, k)


@METHODS.register(NAME)
@dataclass(frozen=True)
class SparseAutoencoder(Method):
    """TopK sparse autoencoder (Gao et al. 2024) on the layer; its latents grouped into k virtual neurons.

    Defaults (none read off a benchmark target): ``expansion`` 4 latents per channel (Gao et
    al. study 16-256x on language models; 4x keeps the CPU training of a 1280-channel layer
    short, and the world CNN's layers have 32-64 channels); ``topk`` 8 active latents per
    vector (a few per position, as their small-k regime); ``steps`` 1500 Adam steps of
    ``batch_size`` 512 at ``lr`` 1e-3 (on the world CNN's sample the loss is flat by then);
    ``energy_share`` 0.9 and ``max_atoms`` 32 choose the latents that make up the channel;
    ``k`` None: the target's number of concepts, else chosen on the fit references by
    silhouette over ``k_range``; ``n_ref`` 100
    references as PURE; ``seed`` of the SAE's init, batches and the k-means.
    """

    role: ClassVar[str] = "generic"
    citation: ClassVar[str] = "Gao et al. 2024"

    expansion: int = 4
    topk: int = 16
    steps: int = 1500
    batch_size: int = 512
    lr: float = 1e-3
    energy_share: float = 0.9
    max_atoms: int = 32
    k: int | None = None
    k_range: tuple[int, ...] = (2, 3, 4)
    n_ref: int = 100
    n_init: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("expansion", "topk", "steps", "batch_size", "max_atoms", "n_ref", "n_init"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.energy_share <= 1.0:
            raise ValueError(f"energy_share must be in (0, 1], got {self.energy_share}")
        ks = (self.k,) if self.k is not None else tuple(self.k_range)
        if not ks or min(ks) < 2:
            raise ValueError(f"k (or every k_range value) must be >= 2, got k={self.k}, k_range={self.k_range}")

    def _training(self) -> dict:
        return {f: getattr(self, f) for f in ("expansion", "topk", "steps", "batch_size", "lr", "seed")}

    def dictionary(self, context: Context) -> SAEWeights:
        """The layer's SAE: trained once per (model, layer, settings), cached."""
        stats = context.stats
        if stats.sample_vectors is None or stats.sample_ids is None or stats.sample_vectors.shape[0] == 0:
            raise NotApplicable(f"{NAME}: the capture statistics of {context.layer!r} hold no sample of layer "
                                "vectors to train on; set capture.sample_vectors > 0")
        vectors, C = stats.sample_vectors, int(stats.sample_vectors.shape[1])
        settings = self._training()

        def train() -> dict[str, Tensor]:
            return train_topk_sae(vectors, self.expansion * C, self.topk, self.steps, self.batch_size, self.lr,
                                  self.seed).to_tensors()

        def load() -> SAEWeights:
            if context.cache is None:
                return SAEWeights.from_tensors(train())
            spec = {"model": model_fingerprint(context.model, context.memo), "dataset": context.fit.fingerprint,
                    "layer": context.layer, "sample": _sample_digest(stats),
                    **settings}
            return SAEWeights.from_tensors(context.cache.get_or_compute("sae_dictionaries", spec, train))

        key = (context.layer, context.fit.fingerprint, tuple(sorted(settings.items())))
        return context.memo.get(MEMO_SECTION, (context.model, stats), key, load, MEMO_SIZE)

    def _candidate_ks(self, target: Target) -> tuple[int, ...]:
        """The k to use: the field, else the number of concepts the target names, else k_range."""
        if self.k is not None:
            return (self.k,)
        if target.concepts is not None and len(target.concepts) >= 2:
            return (len(target.concepts),)
        return tuple(self.k_range)

    def _group(self, lat: Tensor, ks: tuple[int, ...], channel: int):
        """k, group label per atom and silhouettes, from the atoms' (n, HW, atoms) latents."""
        n_atoms = lat.shape[-1]
        if n_atoms < 2 or (n_atoms == 2 and 2 not in ks):
            raise NotApplicable(f"{NAME}: {n_atoms} SAE latent(s) contribute to channel {channel} on its references; "
                                f"too few to form k in {ks} groups")
        if n_atoms == 2:  # two latents: one per group
            return 2, np.arange(2), {}
        profiles = lat.sum(1).T.numpy()  # (atoms, n): which references each latent fires on
        profiles = profiles / np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
        try:
            k, labels, _centroids, silhouettes = choose_k(profiles, ks, self.n_init, self.seed)
        except NotApplicable as err:
            raise NotApplicable(f"{NAME}: cannot group the {n_atoms} latents of channel {channel} into k in {ks} "
                                f"groups ({err})") from None
        return k, labels, silhouettes

    def fit(self, context: Context, target: Target) -> Split:
        check_target(context, target)
        check_alive(context, target.channel)
        sae = self.dictionary(context)
        sample = context.stats.sample_vectors
        assert sample is not None  # dictionary() refuses statistics without a sample
        c = target.channel
        ids, _ = top_max_references(context, c, self.n_ref)
        with torch.no_grad():
            z = torch.cat([_layer_vectors(context, ids[s:s + context.batch_size])
                           for s in range(0, ids.numel(), context.batch_size)])  # (n, HW, C)
            lat = sae.latents(z.flatten(0, 1)).view(z.shape[0], z.shape[1], -1).double()  # (n, HW, L)
            contrib = lat * (sae.scale * sae.w_dec[:, c].double())  # (n, HW, L)
        energy = contrib.pow(2).sum((0, 1))
        ks = self._candidate_ks(target)
        atoms = _select_atoms(energy, self.energy_share, self.max_atoms, max(ks) + 1)
        k, labels, silhouettes = self._group(lat[:, :, atoms], ks, c)
        groups = torch.as_tensor(labels, dtype=torch.long)
        assignment = torch.full((sae.w_dec.shape[0],), -1, dtype=torch.long)
        assignment[atoms] = groups
        mass = torch.stack([contrib[:, :, atoms[groups == i]].sum(-1).clamp(min=0).sum(1) for i in range(k)], 1)
        refs = group_references(mass, ids)
        info = dict(k=k, atoms=int(atoms.numel()), silhouette=silhouettes,
                    energy_kept=float(energy[atoms].sum() / energy.sum().clamp(min=1e-300)),
                    dead_latents=_dead_share(sae, sample), **self._training())
        return dictionary_split(target=target, method=NAME, k=k, reference_ids=refs, info=info,
                                parts_fn=_parts_fn(context, target, sae, assignment, k))


def _sample_digest(stats) -> str:
    """Which vectors the sample holds (image ids and positions; the model, data and layer are
    in the key too)."""
    h = hashlib.blake2b(digest_size=16)
    for t in (stats.sample_ids, stats.sample_positions):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _layer_vectors(context: Context, ids: Tensor) -> Tensor:
    """(n, HW, C) layer output vectors of fit images ``ids``."""
    z = layer_activations(context.model, context.layer, context.fit.images(ids).to(context.device))
    return z.flatten(2).transpose(1, 2).float().cpu()


def _select_atoms(energy: Tensor, share: float, max_atoms: int, least: int) -> Tensor:
    """Indices of the fewest latents (by energy, ties -> lower index) carrying ``share`` of the
    energy, at least ``least`` and at most ``max(max_atoms, least)``; only latents with energy."""
    order = torch.argsort(-energy, stable=True)
    order = order[energy[order] > 0]
    if order.numel() == 0:
        return order
    cumulative = torch.cumsum(energy[order], 0) / energy[order].sum()
    needed = int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype)).item()) + 1
    return order[:min(max(needed, least), max(max_atoms, least), order.numel())].sort().values


def _dead_share(sae: SAEWeights, vectors: Tensor) -> float:
    with torch.no_grad():
        fired = torch.zeros(sae.w_dec.shape[0], dtype=torch.bool)
        for start in range(0, vectors.shape[0], 4096):
            fired |= (sae.latents(vectors[start:start + 4096].float()) > 0).any(0)
    return float(1.0 - fired.float().mean())


def _parts_fn(context: Context, target: Target, sae: SAEWeights, assignment: Tensor, k: int):
    """images -> (N, k + 1, H, W): the groups' contributions to the channel, then the residual."""
    model, layer, c = context.model, target.layer, target.channel
    onehot = torch.zeros(assignment.numel(), k)
    chosen = assignment >= 0
    onehot[chosen, assignment[chosen]] = 1.0
    weights = onehot * (sae.scale * sae.w_dec[:, c])[:, None]  # (L, k): latent -> group contribution
    offset = float(sae.scale * sae.b_dec[c]) / k  # the decoder bias's share of the channel, split evenly

    def parts(images: Tensor) -> Tensor:
        z = layer_activations(model, layer, images)  # (N, C, H, W)
        N, C, H, W = z.shape
        vectors = z.flatten(2).transpose(1, 2).reshape(N * H * W, C)
        virtual = sae.latents(vectors) @ weights.to(vectors) + offset  # (N*HW, k)
        virtual = virtual.view(N, H, W, k).permute(0, 3, 1, 2)
        return torch.cat([virtual, (z[:, c] - virtual.sum(1))[:, None]], dim=1)

    return parts

