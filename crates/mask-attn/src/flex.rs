//! Specialisation to burn-flex without a trait bound: code generic over `B: Backend` moves a
//! tensor into `Flex` or `Autodiff<Flex>` when `B` *is* that backend (a `TypeId` test through
//! [`std::any::Any`], resolved per instantiation; safe code, no transmute), runs a host kernel
//! on its memory, and moves the result back. Every other backend gets its tensor back unchanged.
//!
//! Used by the host attention kernel's autodiff node and the fused affine maps
//! (`affine.rs`) here, and by `mask-model`'s fused GELU and LayerNorm.

use std::any::Any;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::FlexTensor;

/// `Ok(t as U)` when `T` and `U` are the same type, else `Err(t)` (safe specialisation).
pub fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// The float primitive of backend `C`'s tensor as a tensor of `B`.
///
/// # Panics
/// If `B` is not `C` (callers test that first, with [`cast`]).
pub fn rebuild<C: Backend, B: Backend, const D: usize>(p: C::FloatTensorPrimitive) -> Tensor<B, D> {
    cast(Tensor::<C, D>::from_primitive(TensorPrimitive::Float(p)))
        .unwrap_or_else(|_| unreachable!("B is C"))
}

/// `t`'s float primitive as backend `C`'s.
///
/// # Panics
/// If `B` is not `C` (callers test that first, with [`cast`]).
pub fn primitive<B: Backend, C: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> C::FloatTensorPrimitive {
    cast::<_, Tensor<C, D>>(t)
        .unwrap_or_else(|_| unreachable!("B is C"))
        .into_primitive()
        .tensor()
}

/// `on_autodiff` when `B` is `Autodiff<Flex>`, `on_plain` when it is `Flex`, applied to `x`'s
/// float primitive; `Err(x)` (unchanged) for every other backend and for element types other
/// than `f32`.
pub fn on_flex<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    on_autodiff: impl FnOnce(AutodiffFlexFloat) -> AutodiffFlexFloat,
    on_plain: impl FnOnce(FlexTensor) -> FlexTensor,
) -> std::result::Result<Tensor<B, D>, Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let x = match cast::<_, Tensor<Autodiff<Flex>, D>>(x) {
        Ok(x) => {
            let y = on_autodiff(x.into_primitive().tensor());
            return Ok(rebuild::<Autodiff<Flex>, B, D>(y));
        }
        Err(x) => x,
    };
    match cast::<_, Tensor<Flex, D>>(x) {
        Ok(x) => Ok(rebuild::<Flex, B, D>(on_plain(x.into_primitive().tensor()))),
        Err(x) => Err(x),
    }
}

/// `Autodiff<Flex>`'s float primitive: the flex tensor and its graph node.
pub type AutodiffFlexFloat = burn::tensor::ops::FloatTensor<Autodiff<Flex>>;

/// The contiguous `f32` values of a flex tensor (copied once when it is a strided view).
pub fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .into_data()
                .into_vec::<f32>()
                .expect("an f32 tensor"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn cast_moves_only_between_equal_types() {
        assert_eq!(cast::<u32, u32>(7), Ok(7));
        assert_eq!(cast::<u32, i32>(7), Err(7));
        let device = Default::default();
        let t = Tensor::<Flex, 1>::from_floats([1.0, 2.0], &device);
        assert!(cast::<_, Tensor<NdArray, 1>>(t.clone()).is_err());
        let p = primitive::<Flex, Flex, 1>(t);
        let back: Tensor<Flex, 1> = rebuild::<Flex, Flex, 1>(p);
        assert_eq!(back.into_data().to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
    }
}
