"""The open_clip embedder, loaded through the user's code path (pretrained=<local file>).

A random-weights checkpoint of open_clip's smallest vision transformer (ViT-S-32-alt,
43 M parameters) is written to a temporary file; nothing is downloaded.
"""
from __future__ import annotations

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from benchmark.core.registry import EMBEDDERS  # noqa: E402
from benchmark.sources.embedders import open_clip as oc  # noqa: E402

ARCH = "ViT-S-32-alt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "random_vit_s32.bin"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def reference(checkpoint):
    """The same weights loaded plainly with torch, for known-answer comparisons."""
    model = open_clip.create_model(ARCH, pretrained=None)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    return model.eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def mean_hidden_by_hand(visual, x: torch.Tensor) -> torch.Tensor:
    """PURE's pooling written out: patch tokens + class token + positions, ln_pre, the
    residual blocks, then the mean over tokens (no ln_post, no projection)."""
    t = visual.conv1(x).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(t.shape[0], 1, -1)
    t = visual.ln_pre(torch.cat([cls, t], dim=1) + visual.positional_embedding)
    for block in visual.transformer.resblocks:
        t = block(t)
    return t.mean(dim=1)


def test_registered():
    assert EMBEDDERS.get("open_clip") is oc.OpenClipEmbedder


def test_mean_hidden_from_a_local_file(checkpoint, reference, images):
    emb = oc.OpenClipEmbedder(arch=ARCH, pretrained=checkpoint, pooling="mean_hidden")
    z = emb.embed(images)
    assert z.shape == (2, 384) and torch.isfinite(z).all()
    assert torch.equal(z, emb.embed(images))  # deterministic
    with torch.no_grad():
        expected = mean_hidden_by_hand(reference.visual, emb.preprocess(images))
    assert torch.allclose(z, expected, atol=1e-5)
    assert emb.name == f"open_clip:{ARCH}/random_vit_s32.bin/mean_hidden"


def test_projected_from_a_local_file(checkpoint, reference, images):
    emb = oc.OpenClipEmbedder(arch=ARCH, pretrained=checkpoint, pooling="projected")
    z = emb.embed(images)
    assert z.shape == (2, 256)
    with torch.no_grad():
        assert torch.allclose(z, reference.encode_image(emb.preprocess(images)), atol=1e-5)


def test_reloading_the_file_gives_identical_embeddings(checkpoint, images):
    first = oc.OpenClipEmbedder(arch=ARCH, pretrained=checkpoint).embed(images)
    oc._LOADED.clear()  # force a second load from disk
    second = oc.OpenClipEmbedder(arch=ARCH, pretrained=checkpoint).embed(images)
    assert torch.equal(first, second)  # same file, same batches: bitwise the same
    oc._LOADED.clear()
    one_by_one = oc.OpenClipEmbedder(arch=ARCH, pretrained=checkpoint, batch_size=1).embed(images)
    # another batch size changes the BLAS summation order only (float rounding)
    assert torch.allclose(first, one_by_one, atol=1e-5, rtol=1e-5)


def test_preprocess_resizes_and_normalises(checkpoint):
    emb = oc.OpenClipEmbedder(arch=ARCH, pretrained=checkpoint)
    x224 = torch.rand(1, 3, 224, 224)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert torch.allclose(emb.preprocess(x224), (x224 - mean) / std, atol=1e-6)
    wide = torch.rand(3, 3, 20, 40)  # shortest side -> 224, centre crop
    assert emb.preprocess(wide).shape == (3, 3, 224, 224)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        emb.preprocess(torch.rand(3, 32, 32))


def test_random_weights_need_explicit_permission(images):
    with pytest.raises(ValueError, match="never be used for reported numbers"):
        oc.OpenClipEmbedder(arch=ARCH, pretrained=None)
    emb = oc.OpenClipEmbedder(arch=ARCH, pretrained=None, allow_random=True)
    assert emb.name == f"open_clip:{ARCH}/random/mean_hidden"
    assert emb.embed(images).shape == (2, 384)


def test_missing_weights_error_says_what_to_pass(monkeypatch):
    monkeypatch.setattr(oc, "_cached_checkpoint", lambda cfg, cache_dir: None)
    monkeypatch.setattr(oc, "_online", lambda *a, **k: False)
    emb = oc.OpenClipEmbedder(arch="ViT-B-32", pretrained="openai")
    with pytest.raises(oc.MissingWeightsError, match=r"pretrained='/path/to/file\.bin'"):
        emb.embed(torch.rand(1, 3, 32, 32))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="pooling"):
        oc.OpenClipEmbedder(pooling="cls")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        oc.OpenClipEmbedder(arch=ARCH, pretrained=str(tmp_path / "missing.bin")).embed(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="neither a file nor a pretrained tag"):
        oc.OpenClipEmbedder(arch="ViT-B-32", pretrained="no_such_tag").embed(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        oc.OpenClipEmbedder(arch="ViT-Q-99", pretrained="openai").embed(torch.rand(1, 3, 8, 8))


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    from benchmark.storage.checkpoints import CheckpointError

    bad = tmp_path / "notes.bin"
    bad.write_text("this is a text file, not a checkpoint")
    embedder = EMBEDDERS.get("open_clip")(arch=ARCH, pretrained=str(bad))
    with pytest.raises(CheckpointError, match=f"checkpoint file {bad} is not a usable {ARCH} checkpoint"):
        embedder.embed(torch.rand(1, 3, 32, 32))
