//! Shared experts as `m` more experts of the routed shape (the plan for the CUDA kernel:
//! `docs/dev/shared-experts-in-kernel.md`).
//!
//! An MLP splits additively over its intermediate dimension: the shared experts' SwiGLU of
//! `S = m * I` intermediate rows is the sum of `m` SwiGLU experts of the routed experts' `I`
//! rows each (part `j`: rows `[j I, (j + 1) I)` of the shared gate and up projections and the
//! same columns of the shared down projection), and every token is routed to all `m` parts
//! with weight `gs` (the oracle's `shared_scale`). A backend can then run the shared experts through its
//! routed path: no new task kind, signal or role. [`SharedParts`] holds the parts in the
//! routed experts' layouts (`[m][I][H]` up and gate, `[m][H][I]` down).

use crate::config::{Activation, ConfigError, MoeConfig};

use super::LayerWeights;

/// The shared experts split into parts of the routed experts' shape.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedParts {
    /// `m`: parts (`S / I`).
    pub parts: u32,
    /// `[m][I][H]` up projections.
    pub up: Vec<f32>,
    /// `[m][I][H]` gate projections.
    pub gate: Vec<f32>,
    /// `[m][H][I]` down projections.
    pub down: Vec<f32>,
}

/// `m = S / I` for a config with shared experts (`None` without), or an error naming the
/// field when the shared intermediate size is not a multiple of the routed one or the routed
/// experts are not SwiGLU (a part is a routed expert: same activation, no biases).
pub fn parts(config: &MoeConfig) -> Result<Option<u32>, ConfigError> {
    let Some(shared) = config.shared else { return Ok(None) };
    let (s, i) = (shared.total_inter(), config.inter);
    let invalid = |reason: String| ConfigError::Invalid { field: "shared", reason };
    if i == 0 || s % i != 0 {
        return Err(invalid(format!(
            "the shared experts' {s} intermediate rows are not a multiple of the routed \
             experts' {i}: they cannot run as routed experts"
        )));
    }
    // A part is a routed expert: SiLU-gated (not gpt-oss's clamped SwiGLU), without biases.
    if config.activation != Activation::SiluGated || config.bias {
        return Err(invalid(format!(
            "shared experts are a SwiGLU without biases; routed experts of {} {} biases \
             cannot stand in for them",
            config.activation,
            if config.bias { "with" } else { "without" }
        )));
    }
    Ok(Some(s / i))
}

impl LayerWeights {
    /// The shared experts of `config` as [`SharedParts`] (`None` without shared experts).
    /// Errors as [`parts`], or naming a shared tensor that is missing or of the wrong size.
    pub fn shared_parts(&self, config: &MoeConfig) -> Result<Option<SharedParts>, ConfigError> {
        let Some(m) = parts(config)? else { return Ok(None) };
        let (h, i) = (config.hidden as usize, config.inter as usize);
        let s = m as usize * i;
        let up = sized("shared_up", &self.shared_up, s * h)?.to_vec();
        let gate = sized("shared_gate", &self.shared_gate, s * h)?.to_vec();
        let down_all = sized("shared_down", &self.shared_down, s * h)?;
        // [H][S] -> [m][H][I]: part j takes columns [j I, (j + 1) I) of every row.
        let mut down = Vec::with_capacity(s * h);
        for j in 0..m as usize {
            for row in down_all.chunks_exact(s) {
                down.extend_from_slice(&row[j * i..][..i]);
            }
        }
        Ok(Some(SharedParts { parts: m, up, gate, down }))
    }
}

/// Tensor `name`'s values if present with `len` of them, else an error naming it.
fn sized<'a>(
    name: &'static str,
    t: &'a Option<Vec<f32>>,
    len: usize,
) -> Result<&'a [f32], ConfigError> {
    match t.as_deref() {
        Some(v) if v.len() == len => Ok(v),
        Some(v) => Err(ConfigError::Invalid {
            field: name,
            reason: format!("{} values, expected {len}", v.len()),
        }),
        None => Err(ConfigError::Invalid { field: name, reason: "missing".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, SharedExperts, SharedGate};
    use crate::oracle::{reference_rows, shared_scale};
    use crate::routing::RankRouting;
    use crate::weights::generate_input;

    fn config(count: u32, shared_inter: u32, gate: SharedGate) -> MoeConfig {
        MoeConfig {
            tokens_per_rank: 6,
            hidden: 64,
            inter: 64,
            experts: 4,
            top_k: 2,
            activation: Activation::SiluGated,
            dtype: crate::DType::F32Exact,
            shared: Some(SharedExperts { count, inter: shared_inter, gate }),
            ..MoeConfig::default()
        }
    }

    /// One SwiGLU part's output on `x`, in f64.
    fn part_output(c: &MoeConfig, p: &SharedParts, j: usize, x: &[f32]) -> Vec<f64> {
        let (h, i) = (c.hidden as usize, c.inter as usize);
        let dot = |w: &[f32]| w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
        let act: Vec<f64> = (0..i)
            .map(|r| {
                let up = dot(&p.up[(j * i + r) * h..][..h]);
                let gate = dot(&p.gate[(j * i + r) * h..][..h]);
                Activation::SiluGated.eval(up, gate)
            })
            .collect();
        (0..h)
            .map(|o| {
                let w = &p.down[(j * h + o) * i..][..i];
                w.iter().zip(&act).map(|(&a, &b)| a as f64 * b).sum()
            })
            .collect()
    }

    #[test]
    fn the_parts_sum_to_the_shared_experts_the_oracle_computes() {
        // DeepSeek-V2's kind (two shared experts of I: m = 2) and Qwen's (one of 4 I with the
        // sigmoid gate: m = 4).
        for (count, shared_inter, gate, m) in
            [(2, 64, SharedGate::None, 2), (1, 256, SharedGate::Sigmoid, 4)]
        {
            let c = config(count, shared_inter, gate);
            let w = LayerWeights::generate(&c, 5).unwrap();
            let p = w.shared_parts(&c).unwrap().unwrap();
            assert_eq!(p.parts, m);
            let x = generate_input(&c, 0, 9).unwrap();
            // The oracle's rows with every routed weight 0: the shared experts' output alone.
            let experts = (0..c.tokens_per_rank).flat_map(|_| [0, 1]).collect();
            let weights = vec![0.0; (c.tokens_per_rank * 2) as usize];
            let routing = RankRouting::from_choices(&c, experts, weights).unwrap();
            let tokens: Vec<u32> = (0..c.tokens_per_rank).collect();
            let oracle = reference_rows(&c, &w, &x, &routing, &tokens).unwrap();
            let h = c.hidden as usize;
            for (t, want) in oracle.chunks(h).enumerate() {
                let row = &x[t * h..][..h];
                let gs = shared_scale(&w, row) as f64;
                let mut sum = vec![0.0f64; h];
                for j in 0..m as usize {
                    for (s, v) in sum.iter_mut().zip(part_output(&c, &p, j, row)) {
                        *s += gs * v;
                    }
                }
                let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs() as f64));
                for (a, &b) in sum.iter().zip(want) {
                    assert!((a - b as f64).abs() <= 1e-5 * scale, "m {m} token {t}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn shared_experts_that_do_not_split_are_refused_naming_the_field() {
        assert_eq!(parts(&MoeConfig::default()), Ok(None));
        let odd = MoeConfig { inter: 128, ..config(1, 192, SharedGate::None) };
        assert!(matches!(parts(&odd), Err(ConfigError::Invalid { field: "shared", reason })
            if reason.contains("192") && reason.contains("128")));
        let relu = MoeConfig { activation: Activation::Relu, ..config(1, 64, SharedGate::None) };
        assert!(matches!(parts(&relu), Err(ConfigError::Invalid { field: "shared", .. })));
        // gpt-oss's clamped SwiGLU is gated but not the shared experts' SiLU SwiGLU.
        let oss = MoeConfig {
            activation: Activation::SwigluOss(crate::config::SwigluOss::GPT_OSS),
            ..config(1, 64, SharedGate::None)
        };
        assert!(matches!(parts(&oss), Err(ConfigError::Invalid { field: "shared", .. })));
        let biased = MoeConfig { bias: true, ..config(1, 64, SharedGate::None) };
        assert!(matches!(parts(&biased), Err(ConfigError::Invalid { field: "shared", .. })));
        // A missing tensor is named.
        let c = config(1, 64, SharedGate::None);
        let mut w = LayerWeights::generate(&c, 1).unwrap();
        w.shared_down = None;
        assert!(matches!(
            w.shared_parts(&c),
            Err(ConfigError::Invalid { field: "shared_down", .. })
        ));
    }
}
