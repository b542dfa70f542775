//! Backward conformance in float64: our gradients equal PyTorch's float64 gradients, so the
//! float32 gap in the suite is accumulation precision, not a formula difference.
//!
//! Its own test binary: burn keys a device's default dtypes by device *type*, so NdArray<f32>
//! and NdArray<f64> in one process share them and the first backend to run wins.

#[path = "suite/common.rs"]
mod common;
#[path = "suite/hf_reference.rs"]
mod hf_reference;

use burn::tensor::DType;
use hf_reference::*;
use mask_attn::AttnKernel;
use safetensors::SafeTensors;

type A64 = burn::backend::Autodiff<burn::backend::NdArray<f64>>;

/// In float64 the gradients equal PyTorch's float64 ones: the formulas are the same.
/// Tolerance 1e-5 absolute (measured ~2e-6: the token-type row is folded into the position
/// table in float32 on import).
#[test]
fn gradients_match_pytorch_in_float64() {
    let st = SafeTensors::deserialize(REFERENCE).unwrap();
    for kernel in [AttnKernel::Reference, AttnKernel::BlockSparse] {
        for (name, got) in our_gradients::<A64>(kernel, DType::F64) {
            let (diff, scale) = compare(name, got, doubles(&st, &format!("grad64.{name}")));
            eprintln!("f64 {kernel:?} {name}: max |ours - torch| = {diff:e} (scale {scale:.1})");
            assert!(diff < 1e-5, "{kernel:?} {name}: {diff} (scale {scale})");
        }
    }
}
