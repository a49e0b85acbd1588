//! Layer weights and inputs: seeded generators and safetensors I/O.

/// All weights of one MoE layer, host `f32` values exactly representable in the config dtype.
/// Matrices are row-major in PyTorch `nn.Linear` layout (`[out_features][in_features]`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// Router `[experts][hidden]`.
    pub router: Vec<f32>,
    /// Up projection `[experts][inter][hidden]` (the only one for relu/gelu experts).
    pub up: Vec<f32>,
    /// Gate projection `[experts][inter][hidden]`, for SwiGLU experts only.
    pub gate: Option<Vec<f32>>,
    /// Down projection `[experts][hidden][inter]`.
    pub down: Vec<f32>,
    /// Up bias `[experts][inter]`, when the config has biases.
    pub up_bias: Option<Vec<f32>>,
    /// Gate bias `[experts][inter]`, SwiGLU with biases only.
    pub gate_bias: Option<Vec<f32>>,
    /// Down bias `[experts][hidden]`, when the config has biases.
    pub down_bias: Option<Vec<f32>>,
}
