"""Contract tests parametrised over EVERY registered method (a new method gets them for free).

Setting: the contract world of tests/fakes.py (synthetic-world images, TinyNet with a
planted polysemantic channel, the planted truth, a target naming both concepts), where
every situation a plug-in may require is offered: every method must apply there. A method
declares in ``requires`` what it cannot do without; for each declared situation the method
must refuse (NotApplicable) on the same world lacking it. No test here skips: a method that
does not run fails.
"""
from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch
from torch import nn

from benchmark.core.plugins import SITUATIONS, Method
from benchmark.core.registry import METHODS, hyperparameters
from benchmark.core.types import NotApplicable, Split
from benchmark.engine.layers import channel_activation, layer_activations
from tests.fakes import CONTRACT_LAYER as LAYER
from tests.fakes import build_plugin, contract_world, lacking

MUST_RUN = ("arv_surgery", "pure", "activation_clustering", "activation_kmeans", "identity",
            "random_split", "oracle", "duplicate", "class_gate", "nuisance_split", "sae", "nmf")
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
NAMES = METHODS.names()


def planted_world():
    return contract_world()


def build(name: str):
    return build_plugin(METHODS.get(name))


def fit_fresh(name: str, ctx=None) -> Split:
    world_ctx, target = planted_world()
    try:
        return build(name).fit(ctx or world_ctx, target)
    except NotApplicable as err:  # every situation is offered here: a refusal is a failure
        pytest.fail(f"{name} must apply where every situation is offered, but: {err}")


@functools.lru_cache(maxsize=None)
def _fit_cached(name: str):
    try:
        return fit_fresh(name)
    except BaseException as err:  # remember failures too
        return err


def fitted(name: str) -> Split:
    out = _fit_cached(name)
    if isinstance(out, BaseException):
        raise out
    return out


@pytest.mark.parametrize("name", NAMES)
def test_subclasses_the_method_interface_and_declares_known_situations(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Method)
    assert set(cls.requires) <= set(SITUATIONS), cls.requires


REQUIRED = [(n, s) for n in NAMES for s in sorted(METHODS.get(n).requires)]


@pytest.mark.parametrize(("name", "situation"), REQUIRED)
def test_refuses_where_a_declared_situation_is_missing(name, situation):
    ctx, target = lacking(situation)
    with pytest.raises(NotApplicable) as why:
        build(name).fit(ctx, target)
    assert str(why.value).strip(), "NotApplicable needs a reason"


def heldout_images(n: int = 8) -> torch.Tensor:
    ctx, _ = planted_world()
    return ctx.heldout.images(range(n))


def test_registry_holds_the_baselines_and_published_methods():
    missing = [m for m in MUST_RUN if m not in NAMES]
    assert not missing, f"not registered: {missing}; registered: {NAMES}"


@pytest.mark.parametrize("name", NAMES)
def test_fields_have_defaults_and_config_is_frozen(name):
    cls = METHODS.get(name)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, f"{name} must be a frozen dataclass"
    params = hyperparameters(cls)
    assert "<required>" not in params.values(), f"{name}: fields without defaults: {params}"
    method = cls()
    for f in dataclasses.fields(method)[:1]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(method, f.name, getattr(method, f.name))
    assert METHODS.describe(name).strip(), f"{name} needs a docstring (first line shown by `polysemy list`)"
    hash(method)  # usable as a cache key


@pytest.mark.parametrize("name", NAMES)
def test_activation_shapes(name):
    ctx, target = planted_world()
    split = fitted(name)
    x = heldout_images()
    acts = split.activations(x)
    h, w = layer_activations(ctx.model, LAYER, x).shape[2:]
    assert acts.shape == (x.shape[0], split.k, h, w)
    assert torch.isfinite(acts).all()
    assert split.target == target and split.method == name


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    first, second = fitted(name), fit_fresh(name)
    x = heldout_images()
    assert first.k == second.k and first.reference_ids == second.reference_ids
    assert torch.equal(first.activations(x), second.activations(x))
    if first.directions is not None:
        assert torch.equal(first.directions, second.directions)


@pytest.mark.parametrize("name", NAMES)
def test_recomposition_identity(name):
    ctx, target = planted_world()
    split = fitted(name)
    x = heldout_images()
    with torch.no_grad():
        orig = channel_activation(ctx.model, LAYER, target.channel, x)
        acts, res = split.activations(x), split.residual(x)
    if split.recomposition == "surgery":
        assert res is not None and res.shape == orig.shape
        # written plainly: orig = sum_i d_i - (k - 1) * res
        torch.testing.assert_close(acts.sum(1) - (split.k - 1) * res, orig, atol=1e-5, rtol=0)
    elif split.recomposition == "dictionary":
        assert res is not None and res.shape == orig.shape
        # written plainly: orig = sum_i v_i + res
        torch.testing.assert_close(acts.sum(1) + res, orig, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(acts.sum(1), orig, atol=1e-5, rtol=0)
    torch.testing.assert_close(split.recompose(acts, res), orig, atol=1e-5, rtol=0)


def _no_hooks(model: nn.Module) -> list[str]:
    return [f"{n or '<root>'}.{d}" for n, m in model.named_modules() for d in HOOK_DICTS if getattr(m, d)]


@pytest.mark.parametrize("name", NAMES)
def test_callers_model_untouched(name):
    world_ctx, target = planted_world()
    model = copy.deepcopy(world_ctx.model).eval()
    ctx = dataclasses.replace(world_ctx, model=model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(p.requires_grad, p.grad) for p in model.parameters()]
    split = fit_fresh(name, ctx)
    x = heldout_images()
    split.activations(x), split.residual(x)
    x_grad = x.clone().requires_grad_(True)
    torch.autograd.grad(split.activations(x_grad).sum(), x_grad)  # gradients w.r.t. images only
    if split.model is not None:
        assert split.model is not model
        split.model(x)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "the caller's weights changed"
    assert [(p.requires_grad, p.grad) for p in model.parameters()] == flags
    assert not model.training
    assert not _no_hooks(model), f"leftover hooks: {_no_hooks(model)}"
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_backward_hooks


@pytest.mark.parametrize("name", NAMES)
def test_virtual_neurons_are_differentiable_wrt_images(name):
    x = heldout_images(4).requires_grad_(True)
    (grad,) = torch.autograd.grad(fitted(name).activations(x).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_rewritten_model_has_the_original_logits(name):
    ctx, _ = planted_world()
    split = fitted(name)
    if split.recomposition != "surgery":  # gating and dictionary splits leave the network as it is
        assert split.model is None, f"{name}: a {split.recomposition} split returns no rewritten model"
        return
    assert split.model is not None, f"{name}: a surgery split must return its rewritten model copy"
    x = ctx.heldout.images(range(len(ctx.heldout)))
    with torch.no_grad():
        torch.testing.assert_close(split.model(x), ctx.model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reference_ids_are_valid_fit_indices(name):
    ctx, _ = planted_world()
    split = fitted(name)
    assert split.reference_ids, f"{name}: every method names the reference samples of its virtual neurons"
    assert len(split.reference_ids) == split.k
    flat = [i for group in split.reference_ids for i in group]
    assert flat, "reference groups are all empty"
    assert all(isinstance(i, int) and 0 <= i < len(ctx.fit) for i in flat)
