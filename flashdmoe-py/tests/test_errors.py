"""Every misuse is a Python exception that names the argument, never a crash."""

import pytest
import torch

import flashdmoe
from reference import inputs


@pytest.fixture
def layer(small):
    return flashdmoe.MoE(**small)


class FakeCuda(torch.Tensor):
    """A CPU tensor that says it is on cuda:0: what the extension sees of a CUDA tensor
    (no GPU here)."""

    @property
    def device(self):
        return torch.device("cuda:0")


def test_wrong_device(layer):
    x = torch.empty(4, 64, dtype=torch.bfloat16, device="meta")
    with pytest.raises(ValueError, match="x is on meta but the layer's weights are on cpu"):
        layer(x)
    out = torch.empty(4, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="x is on device meta, expected cpu"):
        layer._engine.forward(x, out)


def test_a_cuda_input_is_checked_before_any_device_work(layer):
    # A CUDA x takes the CUDA path; its output and a given routing must be on the same GPU,
    # the routing as int32 / float32 (the op converts them). These are refused before a GPU is
    # touched, so a CPU tensor posing as a CUDA one is safe here.
    cpu = inputs(4, 64, torch.bfloat16)
    x = torch.Tensor._make_subclass(FakeCuda, cpu)
    with pytest.raises(ValueError, match=r"out is on device cpu, expected cuda:0 \(x's device\)"):
        layer._engine.forward(x, torch.empty_like(cpu))
    ids = torch.zeros(4, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"topk_ids is on device cpu, expected cuda:0 \(x's device\)"):
        layer._engine.forward(x, x, ids, torch.ones(4, 2))
    with pytest.raises(ValueError, match="give both topk_ids and topk_weights, or neither"):
        layer._engine.forward(x, x, ids)


def test_dtype_mismatch(layer):
    with pytest.raises(TypeError, match="x has dtype torch.float32, expected torch.bfloat16"):
        layer(inputs(4, 64, torch.float32))
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        layer._engine.forward([1.0], torch.empty(1))
    layer.float()  # the weights no longer match the layer's dtype
    with pytest.raises(TypeError, match="router.weight has dtype torch.float32"):
        layer(inputs(4, 64, torch.bfloat16))


def test_wrong_shape(layer):
    with pytest.raises(ValueError, match=r"x has shape \[4, 32\], expected \[tokens, hidden\]"):
        layer(inputs(4, 32, torch.bfloat16))
    with pytest.raises(ValueError, match=r"x has shape \[2, 4, 64\]"):
        layer(inputs(8, 64, torch.bfloat16).view(2, 4, 64))


def test_non_contiguous(layer):
    x = inputs(64, 8, torch.bfloat16).t()
    assert x.shape == (8, 64)
    with pytest.raises(ValueError, match=r"x is not contiguous"):
        layer(x)


def test_more_tokens_than_max_tokens(layer):
    with pytest.raises(ValueError, match=r"x has 65 tokens, more than the layer's max_tokens \(64\)"):
        layer(inputs(65, 64, torch.bfloat16))


def test_non_finite_input_is_core_s_typed_error(layer):
    x = inputs(4, 64, torch.bfloat16)
    x[2, 5] = float("nan")
    with pytest.raises(ValueError, match=r"invalid input input: value NaN at index 133"):
        layer(x)


def test_bad_given_routing(layer):
    x = inputs(3, 64, torch.bfloat16)
    ids = torch.tensor([[0, 1], [2, 3], [1, 0]])
    w = torch.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="both topk_ids and topk_weights, or neither"):
        layer(x, topk_ids=ids)
    with pytest.raises(TypeError, match="topk_ids has dtype torch.float32"):
        layer(x, topk_ids=w, topk_weights=w)
    with pytest.raises(ValueError, match=r"topk_ids has shape \[3, 1\], expected \[tokens, top_k\]"):
        layer(x, topk_ids=ids[:, :1].contiguous(), topk_weights=w)
    with pytest.raises(ValueError, match=r"expert index 4 is out of range \(the layer has 4"):
        layer(x, topk_ids=ids + 1, topk_weights=w)
    with pytest.raises(ValueError, match=r"expert index -1 is out of range"):
        layer(x, topk_ids=ids - 1, topk_weights=w)
    with pytest.raises(ValueError, match=r"token 1: expert 2 is chosen twice"):
        layer(x, topk_ids=torch.tensor([[0, 1], [2, 2], [1, 0]]), topk_weights=w)
    with pytest.raises(ValueError, match=r"token 2: slot 1 has the non-finite combine weight"):
        layer(x, topk_ids=ids, topk_weights=torch.tensor([[0.5, 0.5], [1, 0], [1, float("inf")]]))
    with pytest.raises(TypeError, match="topk_weights has dtype torch.float64"):
        layer(x, topk_ids=ids, topk_weights=w.double())


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(hidden=100), ValueError, "invalid config: hidden"),
        (dict(top_k=5), ValueError, "invalid config: top_k"),
        (dict(activation="tanh"), ValueError, "invalid config: activation"),
        (dict(dtype="int8"), ValueError, "invalid config: dtype"),
        (dict(dtype=torch.float64), TypeError, "dtype torch.float64 is not supported"),
        (dict(capacity_factor=0.0), ValueError, "invalid config: capacity"),
        (dict(max_tokens=0), ValueError, "invalid config: max_tokens"),
    ],
)
def test_bad_layer_arguments(small, change, error, match):
    with pytest.raises(error, match=match):
        flashdmoe.MoE(**{**small, **change})


def test_a_group_of_several_ranks_refuses_cpu_tensors(small, monkeypatch):
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group: 2)
    layer = flashdmoe.MoE(**small, group=object())
    with pytest.raises(ValueError, match=r"group of 2 ranks runs on CUDA only"):
        layer(inputs(2, 64, torch.bfloat16))
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group: 1)
    assert flashdmoe.MoE(**small, group=object())(inputs(2, 64, torch.bfloat16)).shape == (2, 64)


def test_a_weight_removed_from_the_module_is_named(layer):
    name = layer._names[-1]
    *path, leaf = name.split(".")
    owner = layer.get_submodule(".".join(path)) if path else layer
    delattr(owner, leaf)
    with pytest.raises(AttributeError, match=f"the weight {name} is missing"):
        layer(inputs(2, 64, torch.bfloat16))


def test_a_weight_replaced_by_a_new_parameter_is_the_one_used(layer):
    x = inputs(3, 64, torch.bfloat16)
    before = layer(x)
    name = layer._names[-1]
    *path, leaf = name.split(".")
    owner = layer.get_submodule(".".join(path)) if path else layer
    old = getattr(owner, leaf)
    setattr(owner, leaf, torch.nn.Parameter(torch.zeros_like(old), requires_grad=False))
    assert layer._weights()[-1] is getattr(owner, leaf)
    assert not torch.equal(layer(x), before)
