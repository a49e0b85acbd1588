"""flashdmoe.MoE on CPU tensors (the simulator) against the float64 PyTorch reference."""

import pytest
import torch

import flashdmoe
from reference import assert_rows_close, inputs, moe, weights_of

DTYPES = [torch.bfloat16, torch.float16, torch.float32, "f32-exact"]
ACTIVATIONS = ["relu", "gelu", "swiglu"]


def tensor_dtype(dtype):
    return torch.float32 if dtype == "f32-exact" else dtype


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_and_activation_matches_the_reference(small, dtype, activation):
    bias = activation != "relu"
    layer = flashdmoe.MoE(**small, activation=activation, dtype=dtype, bias=bias, seed=3)
    x = inputs(40, small["hidden"], tensor_dtype(dtype))
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    ref = moe(x, weights_of(layer), top_k=2, activation=activation)
    assert_rows_close(y, ref, layer.tolerance)


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, None])
@pytest.mark.parametrize("renormalize", [True, False])
def test_capacity_and_renormalisation(small, capacity_factor, renormalize):
    layer = flashdmoe.MoE(
        **small, activation="swiglu", dtype="f32-exact",
        capacity_factor=capacity_factor, renormalize=renormalize, seed=1,
    )
    x = inputs(48, small["hidden"], torch.float32, seed=2)
    ref = moe(x, weights_of(layer), top_k=2, activation="swiglu",
              renormalize=renormalize, capacity_factor=capacity_factor)
    assert_rows_close(layer(x), ref, layer.tolerance)
    if capacity_factor == 0.5:
        assert (layer(x) == 0).all(dim=-1).any(), "some token should lose both its slots"


@pytest.mark.parametrize("tokens", [0, 1, 7, 64])
def test_any_token_count_up_to_max_tokens(small, tokens):
    layer = flashdmoe.MoE(**small, dtype=torch.float32)
    x = inputs(tokens, small["hidden"], torch.float32, seed=tokens)
    y = layer(x)
    assert y.shape == (tokens, small["hidden"])
    assert_rows_close(y, moe(x, weights_of(layer), top_k=2, activation="relu"), layer.tolerance)


def test_same_input_twice_is_bitwise_the_same(small):
    layer = flashdmoe.MoE(**small, activation="swiglu", bias=True)
    x = inputs(33, small["hidden"], torch.bfloat16)
    first = layer(x)
    layer(inputs(20, small["hidden"], torch.bfloat16, seed=9))  # another shape in between
    assert torch.equal(first.view(torch.int16), layer(x).view(torch.int16))


def test_routing_given(small):
    layer = flashdmoe.MoE(**small, activation="gelu", dtype="f32-exact", capacity_factor=0.75)
    x = inputs(24, small["hidden"], torch.float32, seed=5)
    t = torch.arange(24)
    ids = torch.stack([t % 4, (t + 1) % 4], dim=1)  # no router would choose this
    w = torch.stack([torch.full((24,), 0.75), torch.linspace(-1, 1, 24)], dim=1)
    for topk_ids in (ids, ids.to(torch.int32)):
        y = layer(x, topk_ids=topk_ids, topk_weights=w)
        ref = moe(x, weights_of(layer), top_k=2, activation="gelu", capacity_factor=0.75,
                  routing=(ids, w))
        assert_rows_close(y, ref, layer.tolerance)
    # The router's own choice, given back, is the fused forward (up to its f32 weights).
    p, ids = torch.topk(torch.softmax(x.double() @ layer.router.weight.double().T, -1), 2)
    p = (p / p.sum(-1, keepdim=True)).float()
    assert_rows_close(layer(x, topk_ids=ids, topk_weights=p), layer(x), layer.tolerance)


def test_weights_changed_in_place_are_used(small):
    layer = flashdmoe.MoE(**small, dtype=torch.float32)
    x = inputs(8, small["hidden"], torch.float32)
    before = layer(x)
    with torch.no_grad():
        layer.experts.down.weight.mul_(2)
    assert_rows_close(layer(x), 2 * before, layer.tolerance)


@pytest.mark.parametrize("pairs", [None, True, False])
def test_pairs_choice_gives_the_same_bits(small, pairs):
    # The simulator's paired schedule (True) and the unpaired one give bitwise the same output;
    # the choice is kept as given (CUDA pairs by default where an expert's weights stream).
    base = flashdmoe.MoE(**small, activation="swiglu", dtype=torch.bfloat16, seed=5)
    layer = flashdmoe.MoE(**small, activation="swiglu", dtype=torch.bfloat16, seed=5, pairs=pairs)
    assert layer.pairs is pairs and layer._engine.pairs is pairs
    assert f"pairs={pairs}" in repr(layer._engine)
    x = inputs(33, small["hidden"], torch.bfloat16, seed=4)
    assert torch.equal(layer(x), base(x))


def test_pairs_must_be_a_bool_or_none(small):
    with pytest.raises(TypeError, match="pairs"):
        flashdmoe.MoE(**small, pairs="yes")
