//! Which layers the kernel computes: the features beyond the paper's layer it implements, and
//! the refusal of any other before device work.

use flashdmoe_core::config::Feature;
use flashdmoe_core::virtual_experts::VirtualExperts;
use flashdmoe_core::{BackendError, MoeConfig};

/// The features beyond the paper's layer ([`MoeConfig::features`]) the kernel computes: every
/// router of core's `routing` (DeepSeek-V3 / Kimi-K2 / gpt-oss scores, biases, groups,
/// scaling), gpt-oss's clamped SwiGLU, and shared experts with Qwen's sigmoid gate (as virtual
/// routed experts: core's `virtual_experts`, which [`check_computed`] holds them to).
pub const COMPUTED_FEATURES: &[Feature] = &[
    Feature::SharedExperts,
    Feature::SharedExpertGate,
    Feature::RouterScoring,
    Feature::RouterBias,
    Feature::SelectionBias,
    Feature::GroupedTopK,
    Feature::RoutedScaling,
    Feature::GptOssSwiglu,
    Feature::SwigluClamp,
];

/// Most expert groups the kernel's grouped top-k takes (its kept groups are a 64-bit mask).
pub const MAX_GROUPS: u32 = 64;

/// Refuses a layer the kernel does not compute, before any device work: a feature it lacks
/// ([`BackendError::NotSupported`], naming each), more than [`MAX_GROUPS`] expert groups, or
/// shared experts that do not run as virtual routed experts ([`BackendError::InvalidInput`]
/// naming the field: `shared` when their intermediate size is not a multiple of the routed
/// experts' or the routed experts are not SiLU SwiGLU without biases, `capacity` for a
/// capacity factor: shared experts are dropless).
pub fn check_computed(config: &MoeConfig) -> Result<(), BackendError> {
    BackendError::check_features(config, "cuda", "the CUDA kernel", COMPUTED_FEATURES)?;
    if let Some(g) = config.routing.groups
        && g.count > MAX_GROUPS
    {
        return Err(BackendError::InvalidInput {
            what: "routing.groups",
            reason: format!("{} groups: the CUDA kernel takes at most {MAX_GROUPS}", g.count),
        });
    }
    match VirtualExperts::of(config) {
        Ok(_) => Ok(()),
        Err(flashdmoe_core::ConfigError::Invalid { field, reason }) => {
            Err(BackendError::InvalidInput {
                what: field,
                reason: format!(
                    "{reason}; the CUDA kernel runs shared experts as routed experts \
                     (--backend sim computes this layer)"
                ),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the kernel computes `config`'s layer ([`check_computed`]).
pub fn computes(config: &MoeConfig) -> bool {
    check_computed(config).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashdmoe_core::Activation;
    use flashdmoe_core::config::{GroupScore, Groups, Routing, presets};

    #[test]
    fn layers_the_kernel_lacks_are_refused_before_any_device() {
        let v3 = presets::preset("deepseek-v3").unwrap();
        let groups = Groups { count: 128, keep: 4, score: GroupScore::Max };
        let many = MoeConfig { routing: Routing { groups: Some(groups), ..v3.routing }, ..v3 };
        let err = check_computed(&many).unwrap_err().to_string();
        assert!(err.contains("routing.groups") && err.contains("at most 64"), "{err}");
    }

    #[test]
    fn shared_experts_compute_unless_they_cannot_run_as_routed_experts() {
        // Every preset computes now, shared experts (and Qwen's gate) included.
        for model in presets::MODELS.iter() {
            assert!(computes(&model.config()), "{}", model.name);
        }
        let qwen = presets::preset("qwen1.5-moe-a2.7b").unwrap();
        let refused = |c: &MoeConfig, what: &str, needle: &str| {
            let err = check_computed(c).unwrap_err();
            assert!(
                matches!(&err, BackendError::InvalidInput { what: w, .. } if *w == what),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(needle) && msg.contains("--backend sim"), "{msg}");
        };
        // 5632 shared rows are 4 x 1408; 5632 over I = 1472 is not a whole number of experts.
        let odd = MoeConfig { inter: 1472, ..qwen.clone() };
        refused(&odd, "shared", "not a multiple");
        // Routed experts that are not the shared experts' SiLU SwiGLU without biases.
        let relu = MoeConfig { activation: Activation::Relu, ..qwen.clone() };
        refused(&relu, "shared", "SwiGLU");
        let biased = MoeConfig { bias: true, ..qwen.clone() };
        refused(&biased, "shared", "SwiGLU");
        let oss = MoeConfig {
            activation: presets::preset("gpt-oss-20b").unwrap().activation,
            ..qwen.clone()
        };
        refused(&oss, "shared", "SwiGLU");
        // A capacity factor would drop shared rows.
        let factor =
            MoeConfig { capacity: flashdmoe_core::CapacityPolicy::Factor(1.25), ..qwen.clone() };
        refused(&factor, "capacity", "1.25");
        // Without shared experts the same layers compute.
        for c in [odd, relu, biased, oss, factor] {
            assert!(computes(&MoeConfig { shared: None, ..c }));
        }
    }
}
