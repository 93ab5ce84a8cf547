"""Split cards: thumbnails decode to what was encoded and are stored once by content; a card
shows the pool's first images and each neuron's own pool images in response order; on the
oracle split every neuron's references belong to its planted part (the truth labels the pool
as the oracle does); stale thumbnails are pruned; a file that is not a card is refused."""
from __future__ import annotations

import io
import json

import pytest
import torch

from benchmark.core.errors import InputError
from benchmark.core.registry import METHODS
from benchmark.engine.cards import (
    THUMB_SIDE,
    card_thumbnails,
    compute_card,
    load_card,
    prune_thumbnails,
    save_card,
    thumbnail,
    write_thumbnail,
)
from benchmark.engine.pool import pool_labels, positive_sums, reference_pool
from tests.fakes import contract_world


def _decode(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data))


def test_thumbnail_is_webp_of_the_image_at_most_thumb_side():
    red = torch.zeros(3, 300, 200)
    red[0] = 1.0
    img = _decode(thumbnail(red))
    assert img.format == "WEBP" and max(img.size) == THUMB_SIDE and img.size == (75, THUMB_SIDE)
    r, g, b = img.convert("RGB").getpixel((30, 50))
    assert r > 240 and g < 15 and b < 15
    small = _decode(thumbnail(torch.full((1, 20, 20), 0.5)))  # grey, not upscaled
    assert small.size == (20, 20) and abs(small.convert("RGB").getpixel((5, 5))[1] - 128) < 6
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        thumbnail(torch.zeros(4, 8, 8))


def test_thumbnails_are_content_addressed_and_written_once(tmp_path):
    data = thumbnail(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))
    name = write_thumbnail(tmp_path, data)
    stamp = (tmp_path / name).stat().st_mtime_ns
    assert write_thumbnail(tmp_path, data) == name and (tmp_path / name).stat().st_mtime_ns == stamp
    assert (tmp_path / name).read_bytes() == data and len(list(tmp_path.iterdir())) == 1
    other = write_thumbnail(tmp_path, thumbnail(torch.zeros(3, 16, 16)))
    assert other != name and len(list(tmp_path.iterdir())) == 2


@pytest.fixture(scope="module")
def oracle_card(tmp_path_factory):
    ctx, target = contract_world()
    split = METHODS.get("oracle")(n_ref=16).fit(ctx, target)
    thumbs = tmp_path_factory.mktemp("thumbs")
    return ctx, split, compute_card(split, ctx, thumbs, n_original=5, per_neuron=4, pool_size=30), thumbs


def test_card_shows_the_pool_in_order_and_each_neurons_own_images(oracle_card):
    ctx, split, card, thumbs = oracle_card
    ids = reference_pool(ctx, split.target.layer, split.target.channel, 30)
    assert [r["image"] for r in card["original"]] == ids[:5].tolist()
    labels = pool_labels(split, ctx, ids)
    response = positive_sums(split.activations, ctx, ids)
    assert sum(n["share"] for n in card["neurons"]) == pytest.approx(1.0, abs=1e-3)
    for n in card["neurons"]:
        i = n["index"]
        mine = {int(ids[j]): float(response[j, i]) for j in range(ids.numel()) if labels[j] == i}
        shown = [r["image"] for r in n["references"]]
        assert set(shown) <= set(mine) and len(shown) == min(4, len(mine))
        assert [round(mine[s], 5) for s in shown] == [r["value"] for r in n["references"]]
        assert all(a >= b for a, b in zip([mine[s] for s in shown], [mine[s] for s in shown][1:]))
        assert n["share"] == pytest.approx(len(mine) / ids.numel(), abs=1e-4)
    for r in card["original"] + [r for n in card["neurons"] for r in n["references"]]:
        top, bottom, left, right = r["box"]
        assert 0 <= top < bottom <= 1 and 0 <= left < right <= 1
        assert (thumbs / r["thumb"]).is_file()
        assert r["class"] == ctx.heldout.classes[int(ctx.heldout.labels[r["image"]])].name
    assert card["parts"] is not None and len(card["parts"]) == 2 and card["k"] == 2


def test_on_the_oracle_every_reference_belongs_to_its_neurons_planted_part(oracle_card):
    _, _, card, _ = oracle_card
    shown = [(n["index"], r["part"]) for n in card["neurons"] for r in n["references"]]
    assert shown and all(part == i for i, part in shown)
    assert {r["part"] for r in card["original"]} <= {0, 1}


def test_identity_puts_the_whole_pool_on_its_one_neuron_and_images_are_attached(tmp_path):
    ctx, target = contract_world()
    split = METHODS.get("identity")(n_ref=16).fit(ctx, target)
    fvis = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    card = compute_card(split, ctx, tmp_path, pool_size=20, extra_images={"renderings": (fvis, [0, 0])})
    (neuron,) = card["neurons"]
    assert neuron["share"] == 1.0 and len(neuron["references"]) == 6
    files = neuron["images"]["renderings"]
    assert len(files) == 2 and all((tmp_path / f).is_file() for f in files)
    assert card_thumbnails(card) >= set(files)


def test_cards_round_trip_prune_and_refuse_foreign_files(tmp_path, oracle_card):
    _, _, card, thumbs = oracle_card
    cards = tmp_path / "cards"
    save_card(cards / "unit.json", card)
    assert load_card(cards / "unit.json") == json.loads(json.dumps(card))
    stray = write_thumbnail(thumbs, thumbnail(torch.ones(3, 8, 8)))
    assert prune_thumbnails(cards, thumbs) == 1 and not (thumbs / stray).exists()
    assert {p.name for p in thumbs.iterdir()} == card_thumbnails(card)
    (cards / "bad.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(InputError, match="not a split card of version 1"):
        load_card(cards / "bad.json")
    (cards / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read the split card"):
        load_card(cards / "bad.json")
