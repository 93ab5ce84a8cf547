"""The real-photo dataset (benchmark.sources.photos): the shipped mapping checked against WordNet,
the split by source photo, deterministic composites, provisioning, and exact surgery on
Lite0's ``_conv_head`` over these photos."""
import os
import shutil
import subprocess

import pytest
import torch

from benchmark.sources.photos import setup as photo_setup
from benchmark.sources.photos.classes import mapped_stamps, photo_classes, stamps
from benchmark.sources.photos.dataset import split_stamps
from benchmark.sources.zoo.imagenet import imagenet_classes


@pytest.fixture(scope="module")
def wn():
    from benchmark.sources.wordnet import wordnet

    return wordnet()


def _ancestors(synset):
    return set(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms())) | {synset}


def test_every_synset_exists_and_lies_under_its_category(wn):
    from benchmark.sources.wordnet import wnid_of

    categories = {c.synset: c for c in photo_classes()}
    for c in photo_classes():
        assert wnid_of(wn.synset(c.synset)) == c.wnid
    mapped = [s for s in stamps() if s.status == "mapped"]
    assert len(mapped) >= 150 and len(categories) >= 10
    for s in mapped:
        synset = wn.synset(s.synset)  # raises if it does not exist
        assert s.category in categories, s
        assert wn.synset(s.category) in _ancestors(synset), s
        if s.imagenet_wnid:
            assert any(c.wnid == s.imagenet_wnid and c.synset == s.synset for c in imagenet_classes()), s
    for s in stamps():
        assert s.status in ("mapped", "dropped") and (s.status == "mapped" or s.reason), s


def test_imagenet_members_of_a_category_are_its_hyponyms_and_disjoint(wn):
    seen = set()
    for c in photo_classes():
        assert c.imagenet, c
        category = wn.synset(c.synset)
        for index in c.imagenet:
            assert category in _ancestors(wn.synset(imagenet_classes()[index].synset)), (c.synset, index)
        assert not seen & set(c.imagenet)
        seen |= set(c.imagenet)


def test_no_source_photo_is_in_both_splits():
    train, val = split_stamps("train"), split_stamps("val")
    for label, items in mapped_stamps().items():
        assert train[label] and val[label], photo_classes()[label]
        assert not set(train[label]) & set(val[label])
        assert set(train[label]) | set(val[label]) == {s.path for s in items}
    with pytest.raises(ValueError, match="allowed: train, val"):
        split_stamps("test")


@pytest.fixture(scope="module")
def photos():
    from benchmark.core.registry import DATASETS

    return {split: DATASETS.get("stamp_photos")(split=split, per_class=2, image_size=224) for split in ("train", "val")}


def test_composites_are_deterministic_and_labelled_by_source(photos):
    train, val = photos["train"], photos["val"]
    C = len(photo_classes())
    assert len(train) == 2 * C and train.labels.tolist() == [i % C for i in range(2 * C)]
    a, label = train[5]
    b, _ = train[5]
    assert torch.equal(a, b) and label == 5 % C and a.shape == (3, 224, 224)
    assert not torch.equal(a, train[5 + C][0])
    assert {train.source(i) for i in range(len(train))}.isdisjoint({val.source(i) for i in range(len(val))})
    for i in range(len(train)):
        assert train.source(i) in split_stamps("train")[int(train.labels[i])]
    unit = train.to_unit_range(a[None])
    assert 0.0 <= float(unit.min()) and float(unit.max()) <= 1.0
    # the in-memory memo of composites hands out copies: a caller's edit never reaches it
    a.zero_()
    again, _ = train[5]
    assert torch.equal(again, b) and not torch.equal(again, a)
    fresh = type(train)(train.root, split="train", per_class=2, image_size=224)
    assert torch.equal(fresh[5][0], b)  # a new dataset (empty memo) composes the same image


def test_surgery_on_conv_head_leaves_lite0_logits_unchanged(photos):
    from benchmark.core.registry import METHODS, MODELS
    from benchmark.core.types import Context, Target
    from benchmark.engine.capture import CaptureSpec, capture

    model = MODELS.get("efficientnet_lite0_photos")()
    fit, heldout = photos["train"], photos["val"]
    stats = capture(model, fit, CaptureSpec("_conv_head", top_k=4, tau=0.03, batch_size=16), progress=False)
    context = Context(model=model, model_name="efficientnet_lite0_photos", layer="_conv_head", fit=fit,
                      heldout=heldout, stats=stats, batch_size=16)
    channel = int(stats.output_sum.sum(0).argmax())
    split = METHODS.get("arv_surgery")(max_tune_images=4).fit(context, Target("lite0", "_conv_head", channel, ((2,), (4,))))
    imagenet_logits = {}

    def keep(name):
        return lambda _m, _a, out: imagenet_logits.__setitem__(name, out)

    x = heldout.images(range(8))
    handles = [model._fc.register_forward_hook(keep("orig")), split.model._fc.register_forward_hook(keep("split"))]
    try:
        with torch.no_grad():
            grouped = (model(x), split.model(x))
    finally:
        for h in handles:
            h.remove()
    assert split.model is not model
    assert (imagenet_logits["orig"] - imagenet_logits["split"]).abs().max() < 1e-4
    assert (grouped[0] - grouped[1]).abs().max() < 1e-4


def test_missing_stamps_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(photo_setup.STAMPS_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(photo_setup, "DEBIAN_STAMPS", tmp_path / "usr-share")
    assert photo_setup.locate_stamps() is None
    with pytest.raises(photo_setup.StampsMissingError, match="python -m benchmark.sources.photos.setup"):
        photo_setup.locate_stamps(required=True)
    assert photo_setup.main(["--no-apt"]) == 1


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")
def test_setup_extracts_png_and_txt_from_a_deb_idempotently(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    birds = pkg / "usr/share/tuxpaint/stamps/animals/birds"
    birds.mkdir(parents=True)
    (birds / "owl.png").write_bytes(b"png")
    (birds / "owl.txt").write_text("An owl.\n")
    (birds / "owl.ogg").write_bytes(b"sound")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text("Package: tuxpaint-stamps-default\nVersion: 1\nArchitecture: all\n"
                                        "Maintainer: x <x@example.org>\nDescription: test\n")
    deb = tmp_path / "tuxpaint-stamps-default_1_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(deb)], check=True, capture_output=True)
    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(photo_setup.STAMPS_ENV, raising=False)
    monkeypatch.setattr(photo_setup, "DEBIAN_STAMPS", tmp_path / "usr-share")
    assert photo_setup.main(["--deb", str(deb)]) == 0
    target = tmp_path / "cache" / "tuxpaint-stamps"
    assert sorted(p.name for p in (target / "animals/birds").iterdir()) == ["owl.png", "owl.txt"]
    assert photo_setup.locate_stamps() == target
    assert photo_setup.main([]) == 0  # found: nothing to do
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".stamps-")]
    assert os.access(target / "animals/birds/owl.txt", os.R_OK)
