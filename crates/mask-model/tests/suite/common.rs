//! Backends, small configs and comparison helpers shared by the suite.

#![allow(dead_code)]

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use mask_model::{NormPlacement, PositionEncoding, TextEncoderConfig, TransformerConfig};

pub type B = burn::backend::NdArray<f32>;
pub type AB = burn::backend::Autodiff<B>;

pub fn dev() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

pub const VOCAB: usize = 50;

/// vocab 50, d 32, 4 heads, 2 layers, d_ff 64, max_len 32, tile 8 (several tiles at T > 8).
pub fn tiny(position: PositionEncoding, norm: NormPlacement, dropout: f64) -> TextEncoderConfig {
    TextEncoderConfig::new(
        TransformerConfig::new(32, 4, 2, 64)
            .with_norm(norm)
            .with_dropout(dropout)
            .with_attn_dropout(dropout)
            .with_tile(8)
            .with_init_std(0.2),
        VOCAB,
    )
    .with_max_len(32)
    .with_position(position)
}

/// The three position encodings with the norm placement each is usually paired with, plus a
/// pre-LN learned one.
pub fn variants() -> Vec<(PositionEncoding, NormPlacement)> {
    vec![
        (PositionEncoding::Learned, NormPlacement::PostLn),
        (PositionEncoding::Sinusoidal, NormPlacement::PostLn),
        (PositionEncoding::Rotary, NormPlacement::PreLn),
        (PositionEncoding::Learned, NormPlacement::PreLn),
    ]
}

pub fn ids<Bk: Backend>(rows: &[Vec<u32>], device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let seq = rows[0].len();
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    mask_model::ids_tensor::<Bk>("ids", &flat, rows.len(), usize::MAX, device)
        .map(|t| t.reshape([rows.len(), seq]))
        .unwrap()
}

/// A deterministic pseudo-random sequence of ids in `1..VOCAB`.
pub fn seq(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| {
            1 + (i
                .wrapping_mul(2654435761)
                .wrapping_add(salt.wrapping_mul(40503))
                >> 7)
                % (VOCAB as u32 - 1)
        })
        .collect()
}

pub fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// The bit patterns of `t`'s values (for bit-for-bit comparisons).
pub fn bits(t: Vec<f32>) -> Vec<u32> {
    t.into_iter().map(f32::to_bits).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Float parameters of a module with their burn paths.
#[derive(Default)]
pub struct Params<Bk: Backend> {
    stack: Vec<String>,
    pub found: Vec<(String, Param<Tensor<Bk, 1>>)>,
    pub names: Vec<String>,
    pub ids: Vec<burn::module::ParamId>,
}

impl<Bk: Backend> ModuleVisitor<Bk> for Params<Bk> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        self.names.push(self.stack.join("."));
        self.ids.push(param.id);
    }
}

pub fn param_names<Bk: Backend, M: Module<Bk>>(m: &M) -> Vec<String> {
    let mut v = Params::<Bk>::default();
    m.visit(&mut v);
    v.names
}
