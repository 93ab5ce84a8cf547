"""benchmark.engine.memo: per-image memo of activation functions (hits by content, not identity)."""
import torch

from benchmark.core.types import Target
from benchmark.engine.memo import ImageMemo, memoized
from methods.arv_surgery import ARVSurgery
from tests.fakes import tiny_context


def test_sub_batches_and_copies_hit_and_give_the_same_rows():
    calls = []

    def fn(images):
        calls.append(images.shape[0])
        return images.flatten(1).sum(1, keepdim=True) * torch.arange(1, 3)

    memo = ImageMemo(fn)
    x = torch.randn(6, 3, 4, 4)
    with torch.no_grad():
        full = memo(x)
        part = memo(x[[4, 1]].clone())
        mixed = memo(torch.cat([x[:2], x[:2] + 1.0]))
    assert torch.equal(full, fn(x)) and torch.equal(part, full[[4, 1]])
    assert torch.equal(mixed, fn(torch.cat([x[:2], x[:2] + 1.0])))
    assert calls[0] == 6 and calls[1] == 2  # 6 new images; then 2 new (x[:2] + 1) of the mixed call
    assert memo.hits == 2 + 2 and memo.misses == 6 + 2


def test_gradient_calls_bypass_the_memo():
    memo = ImageMemo(lambda images: images * 2.0)
    x = torch.randn(2, 3, requires_grad=True)
    y = memo(x)
    assert y.requires_grad and memo.misses == 0 and not memo.store


def test_memoized_surgery_split_computes_each_image_once():
    ctx = tiny_context()
    split = memoized(ARVSurgery(rho=0.5).fit(ctx, Target("tiny", "conv2", 1, ((0,), (2,)))))
    x = ctx.heldout.images(range(10))
    with torch.no_grad():
        d, res = split.activations(x), split.residual(x[3:7])
        d_again = split.activations(x[5:])
    assert torch.equal(d_again, d[5:])
    assert split.virtual_fn.misses == 10 and split.virtual_fn.hits == 5
    fresh = ARVSurgery(rho=0.5).fit(ctx, Target("tiny", "conv2", 1, ((0,), (2,))))
    with torch.no_grad():
        torch.testing.assert_close(d, fresh.activations(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(res, fresh.residual(x[3:7]), atol=1e-6, rtol=1e-6)


def test_object_memo_hits_only_for_the_same_live_objects_and_keeps_the_newest():
    from benchmark.core.memo import ObjectMemo

    memo, calls = ObjectMemo(2), []

    def compute(tag):
        calls.append(tag)
        return tag

    a, b = object(), object()
    assert memo.get((a,), ("k",), lambda: compute("a-k")) == "a-k"
    assert memo.get((a,), ("k",), lambda: compute("again")) == "a-k"  # hit: same object, same key
    assert memo.get((b,), ("k",), lambda: compute("b-k")) == "b-k"  # another object: computed
    assert memo.get((a,), ("k",), lambda: compute("again")) == "a-k"  # (a, k) is now the most recent
    assert memo.get((a,), ("j",), lambda: compute("a-j")) == "a-j"  # evicts the least recent (b, k)
    assert memo.get((b,), ("k",), lambda: compute("b-k2")) == "b-k2"
    assert calls == ["a-k", "b-k", "a-j", "b-k2"]
    # an entry whose object died never serves a new object that reuses its id
    memo.store[(id(a), "k")] = ((object(),), "stale")
    assert memo.get((a,), ("k",), lambda: compute("fresh")) == "fresh"
    memo.clear()
    assert not memo.store
