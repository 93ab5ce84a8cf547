"""ImageNet as an image folder (benchmark.sources.zoo.imagenet) on tiny fakes made here, and the
shipped ImageNet-1k class table against published indices, torchvision and WordNet."""
import pytest
import torch
from PIL import Image

from benchmark.core.registry import DATASETS
from benchmark.sources.zoo.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageNetFolder,
    imagenet,
    imagenet_classes,
    imagenet_eval_transform,
)
from tests.fakes import GOLDFISH, TENCH, make_fake_imagenet


def test_class_table_is_the_ilsvrc2012_list():
    classes = imagenet_classes()
    wnids = [c.wnid for c in classes]
    assert len(classes) == 1000 and len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert [c.index for c in classes] == list(range(1000))
    assert len({c.synset for c in classes}) == 1000
    published = {0: ("n01440764", "tench", "tench.n.01"), 62: ("n01744401", "rock python", "rock_python.n.01"),
                 687: ("n03854065", "organ", "organ.n.05"), 385: ("n02504013", "Indian elephant", "indian_elephant.n.01"),
                 834: ("n04350905", "suit", "suit.n.01"), 946: ("n07730033", "cardoon", "cardoon.n.02")}
    for index, (wnid, name, synset) in published.items():
        assert (classes[index].wnid, classes[index].name, classes[index].synset) == (wnid, name, synset)


def test_class_order_matches_torchvision_categories():
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    differ = [i for i, c in enumerate(imagenet_classes()) if c.name != categories[i]]
    assert differ == [134, 639]  # torchvision renames: 'crane bird', 'maillot tank suit'


def test_class_table_synsets_agree_with_wordnet():
    from benchmark.sources.wordnet import synset_from_wnid

    for c in imagenet_classes():
        assert synset_from_wnid(c.wnid).name() == c.synset, c


def test_labels_are_imagenet_indices_and_classes_all_1000(tmp_path):
    ds = imagenet(root=make_fake_imagenet(tmp_path), image_size=32)
    assert ds.labels.tolist() == [0, 0, 1, 946, 946]
    assert len(ds) == 5 and ds.num_classes == 1000
    assert ds.classes[946].name == "cardoon" and ds.classes[ds.labels[2]].wnid == GOLDFISH
    assert [c.index for c in ds.present_classes()] == [0, 1, 946]
    assert ds.indices_of([946]).tolist() == [3, 4]
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 946


def test_labels_need_no_image_decoding(tmp_path, monkeypatch):
    root = make_fake_imagenet(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened while listing the dataset")

    monkeypatch.setattr(Image, "open", refuse)
    assert ImageNetFolder(root).labels.tolist() == [0, 0, 1, 946, 946]


def test_default_transform_is_224_and_normalises_with_imagenet_stats(tmp_path):
    ds = imagenet(root=make_fake_imagenet(tmp_path, counts={TENCH: 1}))
    assert ds[0][0].shape == (3, 224, 224)
    # a solid image through resize+crop keeps its colour: (v/255 - mean) / std per channel
    colour = (255, 128, 0)
    out = imagenet_eval_transform(8)(Image.new("RGB", (20, 10), colour))
    assert out.shape == (3, 8, 8)
    for c in range(3):
        expected = (colour[c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[c], torch.full((8, 8), expected))


def test_train_split_and_fingerprint(tmp_path):
    root = make_fake_imagenet(tmp_path, split="train", counts={GOLDFISH: 2})
    a = ImageNetFolder(root, split="train", transform=imagenet_eval_transform(16))
    assert a.labels.tolist() == [1, 1]
    assert a.fingerprint == ImageNetFolder(root, split="train", transform=imagenet_eval_transform(16)).fingerprint
    assert a.fingerprint != ImageNetFolder(root, split="train", transform=imagenet_eval_transform(24)).fingerprint
    Image.new("RGB", (8, 8)).save(root / "train" / GOLDFISH / "img_9.JPEG")
    assert a.fingerprint != ImageNetFolder(root, split="train", transform=imagenet_eval_transform(16)).fingerprint


def test_folder_that_is_not_a_wnid_is_named(tmp_path):
    root = make_fake_imagenet(tmp_path)
    (root / "val" / "cats").mkdir()
    with pytest.raises(ValueError, match="'cats' is not one of the 1000"):
        ImageNetFolder(root)
    (root / "val" / "cats").rmdir()
    (root / "val" / "n00001740").mkdir()  # entity.n.01: a wnid, but not an ImageNet-1k class
    with pytest.raises(ValueError, match="n00001740"):
        ImageNetFolder(root)


def test_missing_root_and_split_are_specific_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageNet root .* is not a folder"):
        ImageNetFolder(tmp_path / "nowhere")
    make_fake_imagenet(tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match="split folder .*train is missing .*found folders: val"):
        ImageNetFolder(tmp_path, split="train")
    with pytest.raises(ValueError, match="allowed: train, val"):
        ImageNetFolder(tmp_path, split="test")


def test_empty_and_flat_folders_are_specific_errors(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(ValueError, match="no images in"):
        ImageNetFolder(tmp_path)
    (tmp_path / "val" / TENCH).mkdir()
    (tmp_path / "val" / TENCH / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=f"class folder .*{TENCH}' holds no images"):  # an empty class folder
        ImageNetFolder(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ValueError, match="holds images directly"):
        ImageNetFolder(tmp_path)


def test_registry_factory_needs_root_and_rejects_unknown_arguments(tmp_path):
    factory = DATASETS.get("imagenet")
    assert factory is imagenet
    with pytest.raises(ValueError, match="pass root="):
        factory()
    with pytest.raises(TypeError, match="allowed: split, root, image_size"):
        factory(root=make_fake_imagenet(tmp_path), colour="blue")
    ds = factory(root=tmp_path, image_size=16, resize_size=20)
    assert ds[0][0].shape == (3, 16, 16)
