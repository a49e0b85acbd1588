//! gpt-oss's bf16 layout: the gate and up projections interleaved in one transposed tensor.

use std::io::{Read, Seek};

use super::Checkpoint;
use super::names::gpt_oss_name;
use crate::config::MoeConfig;
use crate::weights::{LayerWeights, WeightsError, is_routed, specs};

impl<R: Read + Seek> Checkpoint<R> {
    /// A layer in gpt-oss's bf16 layout (module doc): `gate_up_proj` `[E, H, 2I]` holds gate
    /// (even columns) and up (odd columns) transposed, its bias `[E, 2I]` likewise interleaved,
    /// `down_proj` `[E, I, H]` transposed. With `experts`, the experts' tensors of those only
    /// ([`Checkpoint::load_experts`]).
    pub(super) fn load_gpt_oss(
        &mut self,
        config: &MoeConfig,
        prefix: &str,
        experts: Option<&[u32]>,
    ) -> Result<LayerWeights, WeightsError> {
        let (h, i, e) = (config.hidden as usize, config.inter as usize, config.experts as usize);
        let dtype = config.dtype;
        let name = |field| format!("{prefix}{}", gpt_oss_name(field));
        // The experts read: `n` of them, in `experts`' order.
        let n = experts.map_or(e, <[u32]>::len);
        let mut w = LayerWeights::empty();
        for s in specs(config) {
            let values = match s.name {
                "up" | "gate" => {
                    let fused = self.read(&name(s.name), &[e, h, 2 * i], dtype, experts)?;
                    let odd = usize::from(s.name == "up");
                    let mut v = vec![0.0; n * i * h];
                    for (x, row) in v.iter_mut().enumerate() {
                        let (ex, n, col) = (x / (i * h), x / h % i, x % h);
                        *row = fused[(ex * h + col) * 2 * i + 2 * n + odd];
                    }
                    v
                }
                "up_bias" | "gate_bias" => {
                    let fused = self.read(&name(s.name), &[e, 2 * i], dtype, experts)?;
                    let odd = usize::from(s.name == "up_bias");
                    fused.iter().skip(odd).step_by(2).copied().collect()
                }
                "down" => {
                    let t = self.read(&name("down"), &[e, i, h], dtype, experts)?;
                    let mut v = vec![0.0; n * h * i];
                    for (x, out) in v.iter_mut().enumerate() {
                        let (ex, o, n) = (x / (h * i), x / i % h, x % i);
                        *out = t[(ex * i + n) * h + o];
                    }
                    v
                }
                field => {
                    let rows = experts.filter(|_| is_routed(field));
                    self.read(&name(field), &s.shape, dtype, rows)?
                }
            };
            w.set(s.name, values);
        }
        Ok(w)
    }
}
