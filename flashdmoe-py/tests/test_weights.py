"""Weights from torch tensors, state dicts (FlashDMoE, Mixtral and Hugging Face names) and
safetensors files, all through flashdmoe-core's loader."""

import json
import struct

import pytest
import torch

import flashdmoe
from reference import assert_rows_close, inputs, moe

E, H, I = 4, 64, 128


def swiglu(**kw):
    return flashdmoe.MoE(H, I, E, 2, activation="swiglu", max_tokens=64, **kw)


def mixtral(prefix="", seed=0, dtype=torch.float32):
    """A Mixtral-named sparse MoE block's state dict."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: (torch.rand(*shape, generator=g) - 0.5).to(dtype)  # noqa: E731
    sd = {f"{prefix}block_sparse_moe.gate.weight": rand(E, H)}
    for e in range(E):
        base = f"{prefix}block_sparse_moe.experts.{e}."
        sd[base + "w1.weight"] = rand(I, H)  # gate
        sd[base + "w3.weight"] = rand(I, H)  # up
        sd[base + "w2.weight"] = rand(H, I)  # down
    return sd


def qwen_from_mixtral(sd, prefix):
    """The same layer under Hugging Face Qwen-MoE names, behind `prefix`."""
    proj = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
    out = {}
    for name, t in sd.items():
        name = name.replace("block_sparse_moe.", "mlp.")
        for old, new in proj.items():
            name = name.replace(f".{old}.", f".{new}.")
        out[prefix + name] = t
    return out


def stacked(sd, prefix=""):
    """The Mixtral dict's layer under FlashDMoE's names."""
    ex = lambda w: torch.stack(  # noqa: E731
        [sd[f"{prefix}block_sparse_moe.experts.{e}.{w}.weight"] for e in range(E)])
    return {
        "router.weight": sd[f"{prefix}block_sparse_moe.gate.weight"],
        "experts.gate.weight": ex("w1"),
        "experts.up.weight": ex("w3"),
        "experts.down.weight": ex("w2"),
    }


def write_safetensors(path, tensors):
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = bytes(t.contiguous().view(torch.uint8).numpy())
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def assert_weights(layer, expected):
    for name, t in expected.items():
        assert torch.equal(layer.get_parameter(name), t.to(layer.dtype)), name


def test_own_state_dict_round_trips_through_torch(small):
    a = flashdmoe.MoE(**small, bias=True, activation="gelu", seed=1)
    b = flashdmoe.MoE(**small, bias=True, activation="gelu", seed=2)
    x = inputs(16, small["hidden"], torch.bfloat16)
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))
    assert sorted(a.state_dict()) == [
        "experts.down.bias", "experts.down.weight", "experts.up.bias", "experts.up.weight",
        "router.weight",
    ]


def test_mixtral_names_are_rounded_to_the_layer_dtype():
    sd = mixtral("model.layers.7.")
    sd["model.layers.7.input_layernorm.weight"] = torch.ones(H)
    sd["step"] = torch.tensor(3)  # an integer tensor the layer does not need
    sd["mask"] = torch.ones(3, dtype=torch.bool)  # a type core never reads: skipped
    sd["_extra_state"] = "not a tensor"
    layer = swiglu().load_weights(sd)
    assert_weights(layer, stacked(sd, "model.layers.7."))
    x = inputs(32, H, torch.bfloat16)
    ref = moe(x, {k: v.to(torch.bfloat16) for k, v in stacked(sd, "model.layers.7.").items()},
              top_k=2, activation="swiglu")
    assert_rows_close(layer(x), ref, layer.tolerance)


def test_hugging_face_names_and_layer_prefixes():
    both = {**qwen_from_mixtral(mixtral(seed=1), "model.layers.3."),
            **qwen_from_mixtral(mixtral(seed=2), "model.layers.4.")}
    assert "model.layers.3.mlp.experts.0.gate_proj.weight" in both
    with pytest.raises(ValueError, match="choose one by prefix: model.layers.3., model.layers.4."):
        swiglu().load_weights(both)
    layer = swiglu(dtype=torch.float32).load_weights(both, prefix="model.layers.4.")
    assert_weights(layer, stacked(mixtral(seed=2)))


def test_non_contiguous_and_half_precision_tensors_load():
    sd = mixtral(dtype=torch.float16)
    sd = {k: v.t().contiguous().t() if v.dim() == 2 else v for k, v in sd.items()}
    assert not sd["block_sparse_moe.experts.0.w1.weight"].is_contiguous()
    layer = swiglu(dtype=torch.float16).load_weights(sd)
    assert_weights(layer, stacked(sd))


def test_bad_state_dicts_name_the_tensor():
    sd = mixtral()
    del sd["block_sparse_moe.experts.3.w2.weight"]
    with pytest.raises(ValueError, match="missing tensor block_sparse_moe.experts.3.w2.weight"):
        swiglu().load_weights(sd)
    sd = mixtral()
    sd["block_sparse_moe.experts.1.w1.weight"] = torch.zeros(H, I)
    with pytest.raises(ValueError, match=r"experts.1.w1.weight has shape \[64, 128\], expected"):
        swiglu().load_weights(sd)
    with pytest.raises(ValueError, match="missing tensor router.weight"):
        swiglu().load_weights({})
    with pytest.raises(ValueError, match="gate.weight has unsupported element type F64"):
        swiglu().load_weights({k: v.double() for k, v in mixtral().items()})


def test_safetensors_save_and_load(tmp_path):
    a = swiglu(bias=True, seed=4)
    a.save_safetensors(tmp_path / "layer.safetensors")
    b = swiglu(bias=True, seed=5).load_safetensors(tmp_path / "layer.safetensors")
    for name, t in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], t), name


def test_a_mixtral_checkpoint_in_shards(tmp_path):
    sd = mixtral("model.layers.0.", dtype=torch.bfloat16)
    names = sorted(sd)
    write_safetensors(tmp_path / "a.safetensors", {n: sd[n] for n in names[:5]})
    write_safetensors(tmp_path / "b.safetensors", {n: sd[n] for n in names[5:]})
    layer = swiglu().load_safetensors([tmp_path / "a.safetensors", str(tmp_path / "b.safetensors")])
    assert_weights(layer, stacked(sd, "model.layers.0."))
    with pytest.raises(ValueError, match="missing tensor"):
        swiglu().load_safetensors(tmp_path / "a.safetensors")
    with pytest.raises(OSError, match="nowhere.safetensors"):
        swiglu().load_safetensors(tmp_path / "nowhere.safetensors")
