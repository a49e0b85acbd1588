//! Builders of checkpoints for the tests of this module and of `shard`.

use safetensors::Dtype;

use super::Bytes;
use super::names::{PerExpert, hf_layer_name};
use crate::config::{Activation, MoeConfig};
use crate::dtype::DType;
use crate::weights::LayerWeights;

pub(in crate::weights) fn cfg(dtype: DType, activation: Activation, bias: bool) -> MoeConfig {
    MoeConfig {
        hidden: 64,
        inter: 128,
        experts: 3,
        activation,
        bias,
        dtype,
        ..MoeConfig::default()
    }
}

pub(in crate::weights) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// An F32 tensor.
pub(in crate::weights) fn f32_tensor(shape: Vec<usize>, values: &[f32]) -> Bytes {
    Bytes { dtype: Dtype::F32, shape, data: f32_bytes(values) }
}

impl Bytes {
    pub(in crate::weights) fn copy(&self) -> Bytes {
        Bytes { dtype: self.dtype, shape: self.shape.clone(), data: self.data.clone() }
    }
}

pub(in crate::weights) fn serialize(tensors: Vec<(String, Bytes)>) -> Vec<u8> {
    safetensors::serialize(tensors.iter().map(|(n, b)| (n.as_str(), b)), None).unwrap()
}

/// `w` of gpt-oss config `c` in gpt-oss's bf16 layout under `prefix`, as F32.
pub(in crate::weights) fn gpt_oss_layout(
    c: &MoeConfig,
    w: &LayerWeights,
    prefix: &str,
) -> Vec<(String, Bytes)> {
    let (h, i, e) = (c.hidden as usize, c.inter as usize, c.experts as usize);
    let (gate, gb, up_b) =
        (w.gate.as_ref().unwrap(), w.gate_bias.as_ref().unwrap(), w.up_bias.as_ref().unwrap());
    let mut gate_up = vec![0.0; e * h * 2 * i];
    let mut gate_up_bias = vec![0.0; e * 2 * i];
    let mut down = vec![0.0; e * i * h];
    for ex in 0..e {
        for n in 0..i {
            for col in 0..h {
                let at = (ex * h + col) * 2 * i + 2 * n;
                gate_up[at] = gate[(ex * i + n) * h + col];
                gate_up[at + 1] = w.up[(ex * i + n) * h + col];
                down[(ex * i + n) * h + col] = w.down[(ex * h + col) * i + n];
            }
            gate_up_bias[ex * 2 * i + 2 * n] = gb[ex * i + n];
            gate_up_bias[ex * 2 * i + 2 * n + 1] = up_b[ex * i + n];
        }
    }
    let t = |name: &str, shape: Vec<usize>, v: &[f32]| {
        (format!("{prefix}{name}"), f32_tensor(shape, v))
    };
    vec![
        t("mlp.router.weight", vec![e, h], &w.router),
        t("mlp.router.bias", vec![e], w.router_bias.as_ref().unwrap()),
        t("mlp.experts.gate_up_proj", vec![e, h, 2 * i], &gate_up),
        t("mlp.experts.gate_up_proj_bias", vec![e, 2 * i], &gate_up_bias),
        t("mlp.experts.down_proj", vec![e, i, h], &down),
        t("mlp.experts.down_proj_bias", vec![e, h], w.down_bias.as_ref().unwrap()),
    ]
}

/// `w` (generated for `c`) written with a per-expert naming under `prefix`, as F32.
pub(in crate::weights) fn per_expert(
    c: &MoeConfig,
    w: &LayerWeights,
    n: &PerExpert,
    prefix: &str,
) -> Vec<(String, Bytes)> {
    let (h, i) = (c.hidden as usize, c.inter as usize);
    let f32t = f32_tensor;
    let mut out =
        vec![(format!("{prefix}{}", n.router), f32t(vec![c.experts as usize, h], &w.router))];
    for e in 0..c.experts as usize {
        let name = |proj: &str, kind: &str| format!("{prefix}{}{e}.{proj}.{kind}", n.experts);
        out.push((name(n.up, "weight"), f32t(vec![i, h], &w.up[e * i * h..][..i * h])));
        if let Some(g) = &w.gate {
            out.push((name(n.gate, "weight"), f32t(vec![i, h], &g[e * i * h..][..i * h])));
        }
        out.push((name(n.down, "weight"), f32t(vec![h, i], &w.down[e * h * i..][..h * i])));
        if let Some(b) = &w.up_bias {
            out.push((name(n.up, "bias"), f32t(vec![i], &b[e * i..][..i])));
        }
        if let Some(b) = &w.gate_bias {
            out.push((name(n.gate, "bias"), f32t(vec![i], &b[e * i..][..i])));
        }
        if let Some(b) = &w.down_bias {
            out.push((name(n.down, "bias"), f32t(vec![h], &b[e * h..][..h])));
        }
    }
    // The layer-level tensors beside the experts.
    for field in ["router_bias", "selection_bias", "shared_up", "shared_gate", "shared_down"] {
        if let (Some(v), Some(name)) = (w.tensor(field), hf_layer_name(n, field, c)) {
            let s = c.shared.map_or(0, |s| s.total_inter() as usize);
            let shape = match field {
                "router_bias" | "selection_bias" => vec![c.experts as usize],
                "shared_down" => vec![h, s],
                _ => vec![s, h],
            };
            out.push((format!("{prefix}{name}"), f32t(shape, v)));
        }
    }
    if let Some(row) = &w.shared_gate_row {
        let name = hf_layer_name(n, "shared_gate_row", c).unwrap();
        out.push((format!("{prefix}{name}"), f32t(vec![1, h], row)));
    }
    out
}
