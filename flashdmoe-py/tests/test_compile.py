"""The flashdmoe::moe_forward custom op: registration, fake implementation, torch.compile."""

import pytest
import torch

import flashdmoe
from reference import inputs


@pytest.fixture
def layer(small):
    return flashdmoe.MoE(**small, activation="swiglu", bias=True)


def test_opcheck(layer):
    x = inputs(9, 64, torch.bfloat16)
    ids = torch.tensor([[0, 1]] * 9)
    w = torch.full((9, 2), 0.5)
    for args in [(x, layer._weights(), None, None, layer._handle),
                 (x, layer._weights(), ids, w, layer._handle)]:
        torch.library.opcheck(torch.ops.flashdmoe.moe_forward.default, args)


def test_fake_tensors_give_the_output_shape(layer):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(inputs(5, 64, torch.bfloat16))
        weights = [mode.from_tensor(w) for w in layer._weights()]
        y = torch.ops.flashdmoe.moe_forward(x, weights, None, None, layer._handle)
    assert y.shape == (5, 64) and y.dtype == torch.bfloat16


class Block(torch.nn.Module):
    """A model around the layer: a residual MoE block."""

    def __init__(self, moe):
        super().__init__()
        self.norm = torch.nn.LayerNorm(64, dtype=torch.bfloat16)
        self.moe = moe

    def forward(self, x):
        return x + self.moe(self.norm(x))


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_traces_through_the_op(layer, backend):
    torch._dynamo.reset()
    model = Block(layer)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=True)
    # Inference: the op is forward-only (no autograd formula), so the graph is compiled
    # without a backward.
    with torch.no_grad():
        for tokens in (16, 23):
            x = inputs(tokens, 64, torch.bfloat16, seed=tokens)
            assert torch.equal(compiled(x), model(x))


def test_backward_is_refused_by_name(layer):
    x = inputs(4, 64, torch.bfloat16).requires_grad_()
    y = layer(x)
    with pytest.raises(RuntimeError, match="flashdmoe.moe_forward"):
        y.sum().backward()


def test_unknown_handle_is_a_runtime_error(layer):
    with pytest.raises(RuntimeError, match="no live flashdmoe.MoE has handle -1"):
        torch.ops.flashdmoe.moe_forward(inputs(2, 64, torch.bfloat16), layer._weights(),
                                        None, None, -1)
