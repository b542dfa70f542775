//! Specialisation to burn-flex without a trait bound: code generic over `B: Backend` moves a
//! tensor into `Flex` or `Autodiff<Flex>` when `B` *is* that backend (a `TypeId` test through
//! [`std::any::Any`], resolved per instantiation; safe code, no transmute), runs a host kernel
//! on its memory, and moves the result back. Every other backend gets its tensor back unchanged.
//!
//! Used by the host attention kernel's autodiff node here and by `mask-model`'s fused GELU and
//! LayerNorm.

use std::any::Any;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Flex, NdArray};

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
