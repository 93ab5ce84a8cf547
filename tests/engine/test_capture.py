"""The capture engine against a plain image-by-image computation, and its cache."""
import warnings

import pytest
import torch

from benchmark.engine.capture import CaptureSpec, cached_capture, capture
from benchmark.engine.layers import UnknownLayerError
from benchmark.storage import cache_admin
from benchmark.storage.cache import Cache
from tests.fakes import TinyNet, random_images


def naive_stats(model, dataset, layer_name, k, tau):
    """Literal per-image computation of every statistic (no batching, no streaming)."""
    layer = dict(model.named_modules())[layer_name]
    T = dataset.num_classes
    rec = {}
    layer.register_forward_hook(lambda m, a, o: rec.update(x=a[0], z=o))
    counts = torch.zeros(T, dtype=torch.long)
    input_sum, output_sum, importance, attr_sum = None, None, None, None
    max_vals, mean_vals = [], []
    for n in range(len(dataset)):
        image, t = dataset[n]
        logits = model(image[None])
        x, z = rec["x"][0], rec["z"][0]
        grad = torch.autograd.grad(logits[0, t], rec["z"])[0][0]
        A = (z * grad).sum(dim=(1, 2)).detach().double()
        if input_sum is None:
            input_sum = torch.zeros(T, x.shape[0], dtype=torch.float64)
            output_sum = torch.zeros(T, z.shape[0], dtype=torch.float64)
            importance = torch.zeros(T, z.shape[0], dtype=torch.long)
            attr_sum = torch.zeros(T, z.shape[0], dtype=torch.float64)
        counts[t] += 1
        input_sum[t] += x.detach().sum(dim=(1, 2)).double()
        output_sum[t] += z.detach().sum(dim=(1, 2)).double()
        total_positive = sum(max(a, 0.0) for a in A.tolist())
        for c in range(len(A)):
            if A[c] >= tau * total_positive:
                importance[t, c] += 1
        attr_sum[t] += A
        max_vals.append(z.detach().amax(dim=(1, 2)))
        mean_vals.append(z.detach().mean(dim=(1, 2)))
    tops = {}
    for name, vals in (("max", torch.stack(max_vals)), ("mean", torch.stack(mean_vals))):
        ids = []
        for c in range(vals.shape[1]):
            order = sorted(range(len(dataset)), key=lambda i: (-float(vals[i, c]), i))[:k]
            ids.append(order)
        tops[name] = torch.tensor(ids)
    return dict(counts=counts, input_sum=input_sum, output_sum=output_sum, importance=importance,
                attr_sum=attr_sum, top_max=tops["max"], top_mean=tops["mean"])


@pytest.mark.parametrize("layer", ["conv2", "act1"])
def test_capture_matches_naive_per_image_computation(layer):
    model, data = TinyNet(), random_images(n=30, num_classes=4)
    spec = CaptureSpec(layer=layer, top_k=5, tau=0.05, batch_size=7)
    stats = capture(model, data, spec, progress=False)
    ref = naive_stats(TinyNet(), data, layer, k=5, tau=0.05)
    assert torch.equal(stats.class_counts, ref["counts"])
    torch.testing.assert_close(stats.input_sum, ref["input_sum"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.output_sum, ref["output_sum"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.attribution_sum, ref["attr_sum"], atol=1e-5, rtol=1e-5)
    assert torch.equal(stats.importance_counts, ref["importance"])
    assert torch.equal(stats.top_max_ids, ref["top_max"])
    assert torch.equal(stats.top_mean_ids, ref["top_mean"])


def test_capture_without_tau_skips_importance_and_keeps_model_mode():
    model, data = TinyNet(), random_images()
    model.train()
    stats = capture(model, data, CaptureSpec("conv2", top_k=3, tau=None), progress=False)
    assert stats.importance_counts is None and stats.tau is None
    assert model.training, "the caller's train/eval mode must be restored"
    with pytest.raises(ValueError, match="importance counters"):
        stats.relevant_classes()


def test_relevant_classes_uses_p_of_class_count():
    model, data = TinyNet(), random_images(n=40)
    stats = capture(model, data, CaptureSpec("conv2", tau=0.05), progress=False)
    rel = stats.relevant_classes(p=0.5)
    expected = stats.importance_counts >= 0.5 * stats.class_counts[:, None]
    assert torch.equal(rel, expected)


def test_second_identical_request_is_served_from_cache(tmp_path):
    cache = Cache(tmp_path)
    model, data = TinyNet(), random_images()
    spec = CaptureSpec("conv2", top_k=4, tau=0.05)
    first = cached_capture(model, data, spec, cache=cache, progress=False)
    assert (cache.hits, cache.misses) == (0, 1)
    second = cached_capture(model, data, spec, cache=cache, progress=False)
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first.top_max_ids, second.top_max_ids)
    torch.testing.assert_close(first.input_sum, second.input_sum)


def test_cache_key_changes_with_layer_parameters_dataset_and_weights(tmp_path):
    cache = Cache(tmp_path)
    model, data = TinyNet(), random_images()
    base = CaptureSpec("conv2", top_k=4, tau=0.05)
    cached_capture(model, data, base, cache=cache, progress=False)
    variants = [
        (model, data, CaptureSpec("act1", top_k=4, tau=0.05)),
        (model, data, CaptureSpec("conv2", top_k=5, tau=0.05)),
        (model, data, CaptureSpec("conv2", top_k=4, tau=0.10)),
        (model, random_images(seed=1), base),
        (TinyNet(seed=1), data, base),
    ]
    for i, (m, d, s) in enumerate(variants, start=2):
        cached_capture(m, d, s, cache=cache, progress=False)
        assert cache.misses == i, f"variant {i - 1} was wrongly served from the cache"
    assert len(list(cache_admin.entries(cache))) == 6


def test_corrupted_cache_file_is_recomputed_not_used(tmp_path):
    cache = Cache(tmp_path)
    model, data = TinyNet(), random_images()
    spec = CaptureSpec("conv2", top_k=4, tau=0.05)
    good = cached_capture(model, data, spec, cache=cache, progress=False)
    (entry,) = list(cache_admin.entries(cache))
    entry.path.write_bytes(b"this is not a safetensors file")
    with pytest.warns(UserWarning, match="corrupted"):
        again = cached_capture(model, data, spec, cache=cache, progress=False)
    assert cache.misses == 2
    torch.testing.assert_close(again.output_sum, good.output_sum)
    # and the rewritten file is valid again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_capture(model, data, spec, cache=cache, progress=False)
    assert cache.hits == 1


def test_capture_errors_are_specific():
    model = TinyNet()
    with pytest.raises(UnknownLayerError, match="conv2"):
        capture(model, random_images(), CaptureSpec("conv3"), progress=False)
    empty = random_images(n=4)
    empty.data, empty.labels = empty.data[:0], empty.labels[:0]
    with pytest.raises(ValueError, match="empty dataset"):
        capture(model, empty, CaptureSpec("conv2"), progress=False)
    with pytest.raises(ValueError, match="top_k"):
        CaptureSpec("conv2", top_k=0)


def test_bf16_autocast_option_stays_close_to_float32():
    """The stated accuracy check of the GPU option: class sums within 3% (relative to the
    largest magnitude) and at least 80% of the top-5 references shared."""
    model, data = TinyNet(), random_images(n=40)
    exact = capture(model, data, CaptureSpec("conv2", top_k=5, tau=0.05), progress=False)
    fast = capture(model, data, CaptureSpec("conv2", top_k=5, tau=0.05, autocast_bf16=True), progress=False)
    scale = exact.output_sum.abs().max()
    assert (fast.output_sum - exact.output_sum).abs().max() <= 0.03 * scale
    shared = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact.top_max_ids, fast.top_max_ids))
    assert shared >= 0.8 * exact.top_max_ids.numel()


def test_input_of_an_inplace_layer_is_read_before_it_runs():
    from benchmark.engine.layers import layer_activations

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(inplace=True), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.randn(3, 3, 4, 4)
    model(x)
    pre = model[0](x).detach()
    got = layer_activations(model, "1", x, side="input")
    torch.testing.assert_close(got, pre)
    assert (pre < 0).any(), "the check needs negative inputs that ReLU would overwrite"
    data = random_images(n=8, num_classes=2, size=4)
    stats = capture(model, data, CaptureSpec("1", top_k=2, tau=None), progress=False)
    expected = torch.stack([model[0](data[i][0][None])[0].detach().sum((1, 2)) for i in range(8)])
    labels = data.labels
    for t in range(2):
        torch.testing.assert_close(stats.input_sum[t].float(), expected[labels == t].sum(0), atol=1e-4, rtol=1e-4)


def test_model_fingerprint_covers_batchnorm_buffers_and_weights():
    from benchmark.storage.cache import model_fingerprint

    a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))  # 0-dim long buffer
    b = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    c = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    c.load_state_dict(a.state_dict())
    with torch.no_grad():
        c[1].running_mean += 1
    assert model_fingerprint(c) != model_fingerprint(a)


def test_eval_mode_restores_every_modules_own_flag():
    from benchmark.engine.layers import eval_mode

    model = TinyNet().train()
    model.conv1.eval()  # a mixed state, e.g. a frozen sub-module
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model.conv2.training and not model.conv1.training


def test_cached_statistics_store_only_the_classes_that_occur():
    from benchmark.engine.layer_stats import LayerStats

    model, data = TinyNet(seed=0).eval(), random_images(n=24, num_classes=3, seed=4)
    small = capture(model, data, CaptureSpec("conv2", top_k=4, tau=0.05), progress=False)
    # the same statistics as if the model had 1000 classes of which 3 occur
    wide = {n: (torch.cat([v, torch.zeros((997, *v.shape[1:]), dtype=v.dtype)]) if n in
                ("class_counts", "input_sum", "output_sum", "importance_counts", "attribution_sum") else v)
            for n, v in small.__dict__.items() if v is not None and n != "tau"}
    stats = LayerStats(**wide, tau=small.tau)
    flat = stats.to_tensors()
    assert flat["class_rows"].tolist() == [0, 1, 2] and flat["input_sum"].shape[0] == 3
    back = LayerStats.from_tensors(flat)
    for name, value in stats.__dict__.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(back, name)), name
    assert back.tau == stats.tau and back.num_classes == 1000
    dense_bytes = sum(v.numel() * v.element_size() for v in wide.values())
    sparse_bytes = sum(v.numel() * v.element_size() for v in flat.values())
    assert sparse_bytes < dense_bytes / 10
