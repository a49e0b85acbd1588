//! The layer config of `flashdmoe run`: a base (default, preset or file) plus flag overrides.

use flashdmoe::core::config::presets;
use flashdmoe::core::{Activation, CapacityPolicy, DType, MoeConfig, Placement};

use super::{ActivationArg, CliError, ConfigArgs, DTypeArg};

/// Whether any flag describes a layer (a base or an override).
pub(super) fn given(args: &ConfigArgs) -> bool {
    let sizes = [args.world, args.tokens, args.hidden, args.inter, args.experts, args.top_k];
    args.preset.is_some()
        || args.config.is_some()
        || sizes.iter().any(Option::is_some)
        || args.activation.is_some()
        || args.bias
        || args.no_bias
        || args.dtype.is_some()
        || args.capacity_factor.is_some()
        || args.dropless
        || args.no_renormalize
        || args.placement.is_some()
}

/// The config the flags describe, validated.
pub(super) fn build(args: &ConfigArgs) -> Result<MoeConfig, CliError> {
    let mut c = base(args)?;
    let sizes = [
        (&mut c.world, args.world),
        (&mut c.tokens_per_rank, args.tokens),
        (&mut c.hidden, args.hidden),
        (&mut c.inter, args.inter),
        (&mut c.experts, args.experts),
        (&mut c.top_k, args.top_k),
    ];
    for (field, value) in sizes {
        if let Some(v) = value {
            *field = v;
        }
    }
    if let Some(a) = args.activation {
        c.activation = match a {
            ActivationArg::Relu => Activation::Relu,
            ActivationArg::Gelu => Activation::Gelu,
            ActivationArg::Swiglu => Activation::SiluGated,
        };
    }
    if args.bias {
        c.bias = true;
    }
    if args.no_bias {
        c.bias = false;
    }
    if let Some(d) = args.dtype {
        c.dtype = match d {
            DTypeArg::Bf16 => DType::Bf16,
            DTypeArg::F16 => DType::F16,
            DTypeArg::F32 => DType::F32,
            DTypeArg::F32Exact => DType::F32Exact,
        };
    }
    if let Some(f) = args.capacity_factor {
        c.capacity = CapacityPolicy::Factor(f);
    }
    if args.dropless {
        c.capacity = CapacityPolicy::Dropless;
    }
    if args.no_renormalize {
        c.renormalize = false;
    }
    if let Some(p) = &args.placement {
        c.placement = parse_placement(p)?;
    }
    c.validate()?;
    Ok(c)
}

/// The config before overrides: a preset, a file, or the default.
fn base(args: &ConfigArgs) -> Result<MoeConfig, CliError> {
    let loaded = match (&args.preset, &args.config) {
        (Some(name), _) => presets::preset(name),
        (None, Some(path)) => MoeConfig::load(path),
        (None, None) => return Ok(MoeConfig::default()),
    };
    // A preset or file problem is a usage error (exit 2), like a bad flag.
    loaded.map_err(|e| CliError::Usage(e.to_string()))
}

/// `contiguous`, or a comma-separated table of ranks (one per expert).
fn parse_placement(s: &str) -> Result<Placement, CliError> {
    if s.trim().eq_ignore_ascii_case("contiguous") {
        return Ok(Placement::Contiguous);
    }
    s.split(',')
        .map(|r| {
            r.trim().parse::<u32>().map_err(|_| {
                CliError::Usage(format!(
                    "--placement: {r:?} is not a rank; expected `contiguous` or ranks like `0,1,0,1`"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Placement::Table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_parses_tables_and_rejects_garbage() {
        assert_eq!(parse_placement("contiguous").unwrap(), Placement::Contiguous);
        assert_eq!(parse_placement("0, 1,1").unwrap(), Placement::Table(vec![0, 1, 1]));
        assert!(matches!(parse_placement("0,x"), Err(CliError::Usage(_))));
        assert!(matches!(parse_placement(""), Err(CliError::Usage(_))));
    }
}
