//! The layer a Python `flashdmoe.MoE` describes, as core's [`MoeConfig`].
//!
//! One process drives one rank (`world` 1: `group=None`); the token count is the only thing
//! that changes from call to call, up to `max_tokens`, so a [`LayerSpec`] is a config template
//! whose [`LayerSpec::config`] fills in the call's tokens. Capacity follows the call's tokens
//! (`ceil(factor * tokens * top_k / experts)`, core's rule), as a PyTorch MoE computes it.

use flashdmoe_core::{Activation, CapacityPolicy, ConfigError, DType, MoeConfig};

/// The arguments of `flashdmoe.MoE` that fix the layer.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecArgs<'a> {
    pub hidden: u32,
    pub inter: u32,
    pub experts: u32,
    pub top_k: u32,
    /// `relu`, `gelu` or `swiglu` (core's names).
    pub activation: &'a str,
    /// `bf16`, `f16`, `f32` or `f32-exact` (core's names).
    pub dtype: &'a str,
    /// `None`: dropless.
    pub capacity_factor: Option<f64>,
    pub renormalize: bool,
    pub bias: bool,
    pub max_tokens: u32,
}

/// A validated layer: a config for any token count up to `max_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    base: MoeConfig,
}

impl LayerSpec {
    /// Validates `args` (the error names the field).
    pub fn new(args: &SpecArgs<'_>) -> Result<LayerSpec, ConfigError> {
        let activation: Activation = args.activation.parse()?;
        let dtype: DType = args.dtype.parse().map_err(|e| ConfigError::Invalid {
            field: "dtype",
            reason: format!("{e} (expected bf16, f16, f32 or f32-exact)"),
        })?;
        if args.max_tokens == 0 {
            let reason = "must be at least 1".to_owned();
            return Err(ConfigError::Invalid { field: "max_tokens", reason });
        }
        let base = MoeConfig {
            world: 1,
            tokens_per_rank: args.max_tokens,
            hidden: args.hidden,
            inter: args.inter,
            experts: args.experts,
            top_k: args.top_k,
            activation,
            bias: args.bias,
            dtype,
            capacity: args.capacity_factor.map_or(CapacityPolicy::Dropless, CapacityPolicy::Factor),
            renormalize: args.renormalize,
            ..MoeConfig::default()
        };
        base.validate()?;
        Ok(LayerSpec { base })
    }

    /// The config of a call with `tokens` tokens (`<= max_tokens`).
    pub fn config(&self, tokens: u32) -> MoeConfig {
        MoeConfig { tokens_per_rank: tokens, ..self.base.clone() }
    }

    /// The config at `max_tokens` (what weights are checked against).
    pub fn base(&self) -> &MoeConfig {
        &self.base
    }

    /// The most tokens a call may have.
    pub fn max_tokens(&self) -> u32 {
        self.base.tokens_per_rank
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SpecArgs<'static> {
        SpecArgs {
            hidden: 64,
            inter: 128,
            experts: 4,
            top_k: 2,
            activation: "swiglu",
            dtype: "f32-exact",
            capacity_factor: None,
            renormalize: true,
            bias: true,
            max_tokens: 32,
        }
    }

    #[test]
    fn python_arguments_become_core_config() {
        let spec = LayerSpec::new(&args()).unwrap();
        let c = spec.config(5);
        assert_eq!((c.world, c.tokens_per_rank, c.experts, c.top_k), (1, 5, 4, 2));
        assert_eq!(c.activation, Activation::SiluGated);
        assert_eq!(c.dtype, DType::F32Exact);
        assert_eq!(c.capacity, CapacityPolicy::Dropless);
        assert_eq!(spec.max_tokens(), 32);
        let capped = LayerSpec::new(&SpecArgs { capacity_factor: Some(1.25), ..args() }).unwrap();
        assert_eq!(capped.config(8).capacity, CapacityPolicy::Factor(1.25));
        assert_eq!(capped.config(8).capacity_rows(), 5, "ceil(1.25 * 8 * 2 / 4)");
    }

    #[test]
    fn bad_arguments_name_the_field() {
        let field = |a: SpecArgs<'_>| match LayerSpec::new(&a) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(SpecArgs { activation: "tanh", ..args() }), "activation");
        assert_eq!(field(SpecArgs { dtype: "int8", ..args() }), "dtype");
        assert_eq!(field(SpecArgs { max_tokens: 0, ..args() }), "max_tokens");
        assert_eq!(field(SpecArgs { hidden: 100, ..args() }), "hidden");
        assert_eq!(field(SpecArgs { top_k: 5, ..args() }), "top_k");
        assert_eq!(field(SpecArgs { capacity_factor: Some(-1.0), ..args() }), "capacity");
    }
}
