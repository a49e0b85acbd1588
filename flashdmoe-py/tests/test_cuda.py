"""flashdmoe.MoE on CUDA tensors (the kernel's device-resident forward on the current stream)
against the float64 PyTorch reference; CUDA-graph capture and torch.compile on the GPU.
Skipped, with a visible reason, where torch has no GPU."""

import pytest
import torch

import flashdmoe
from reference import assert_rows_close, inputs, moe, weights_of

if not torch.cuda.is_available():
    pytest.skip("skipped: no GPU (torch.cuda.is_available() is False)", allow_module_level=True)

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
ACTIVATIONS = ["relu", "gelu", "swiglu"]


def on_gpu(x):
    return x.to("cuda")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_and_activation_matches_the_reference(small, dtype, activation):
    bias = activation != "relu"
    layer = flashdmoe.MoE(**small, activation=activation, dtype=dtype, bias=bias, seed=3).cuda()
    x = inputs(40, small["hidden"], dtype)
    y = layer(on_gpu(x))
    torch.cuda.synchronize()
    layer.status()
    assert y.device.type == "cuda" and y.shape == x.shape and y.dtype == x.dtype
    ref = moe(x, weights_of(layer.cpu()), top_k=2, activation=activation)
    assert_rows_close(y.cpu(), ref, layer.tolerance)


def test_any_token_count_up_to_max_tokens_without_a_rebuild(small):
    layer = flashdmoe.MoE(**small, activation="swiglu", seed=5).cuda()
    w = weights_of(layer.cpu())
    layer.cuda()
    for tokens in [64, 1, 7, 33]:
        x = inputs(tokens, small["hidden"], torch.bfloat16, seed=tokens)
        y = layer(on_gpu(x))
        torch.cuda.synchronize()
        layer.status()
        assert_rows_close(y.cpu(), moe(x, w, top_k=2, activation="swiglu"), layer.tolerance)


def test_a_cuda_graph_of_the_layer_replays_correctly(small):
    layer = flashdmoe.MoE(**small, activation="swiglu", seed=6).cuda()
    w = weights_of(layer.cpu())
    layer.cuda()
    static_x = on_gpu(inputs(48, small["hidden"], torch.bfloat16))
    layer(static_x)  # builds the GPU layer outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = layer(static_x)
    for seed in range(10):
        x = inputs(48, small["hidden"], torch.bfloat16, seed=100 + seed)
        static_x.copy_(on_gpu(x))
        graph.replay()
        torch.cuda.synchronize()
        layer.status()
        assert_rows_close(static_y.cpu(), moe(x, w, top_k=2, activation="swiglu"), layer.tolerance)


def test_torch_compile_runs_the_kernel(small):
    layer = flashdmoe.MoE(**small, activation="gelu", bias=True, seed=7).cuda()
    w = weights_of(layer.cpu())
    layer.cuda()
    compiled = torch.compile(layer)
    x = inputs(20, small["hidden"], torch.bfloat16, seed=4)
    with torch.no_grad():
        y = compiled(on_gpu(x))
    torch.cuda.synchronize()
    assert_rows_close(y.cpu(), moe(x, w, top_k=2, activation="gelu"), layer.tolerance)


def test_a_routing_given_on_the_gpu_skips_the_router(small):
    layer = flashdmoe.MoE(**small, activation="swiglu", bias=True, seed=8).cuda()
    w = weights_of(layer.cpu())
    layer.cuda()
    x = inputs(30, small["hidden"], torch.bfloat16, seed=5)
    ids = torch.stack([torch.arange(30) % 4, (torch.arange(30) + 1) % 4], dim=1)  # int64
    weights = torch.full((30, 2), 0.75)
    y = layer(on_gpu(x), topk_ids=on_gpu(ids), topk_weights=on_gpu(weights))
    torch.cuda.synchronize()
    layer.status()
    ref = moe(x, w, top_k=2, activation="swiglu", routing=(ids, weights))
    assert_rows_close(y.cpu(), ref, layer.tolerance)
    # An expert out of range is only seen on the GPU: status() raises, naming the token.
    bad = ids.clone()
    bad[3, 1] = 4
    layer(on_gpu(x), topk_ids=on_gpu(bad), topk_weights=on_gpu(weights))
    torch.cuda.synchronize()
    with pytest.raises(TimeoutError, match="given routing"):
        layer.status()
