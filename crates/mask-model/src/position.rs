//! Position encodings computed on the host once and uploaded per forward (a `[T, d]` slice):
//! the sinusoidal table of Vaswani et al. 2017 (section 3.5), MAE's fixed 2-D sin/cos table
//! (He et al. 2021), and rotary embeddings (Su et al. 2021) in the rotate-half layout.
//!
//! Legend: B batch, H heads, T positions, D head dim, d model width.

use burn::prelude::*;

/// `[len, d]` row-major: `pe[p, 2i] = sin(p / 10000^(2i/d))`, `pe[p, 2i+1] = cos(...)`.
pub fn sinusoid_table(len: usize, d: usize) -> Vec<f32> {
    let mut table = vec![0.0f32; len * d];
    for p in 0..len {
        for i in 0..d / 2 {
            let angle = p as f64 / 10000f64.powf(2.0 * i as f64 / d as f64);
            table[p * d + 2 * i] = angle.sin() as f32;
            table[p * d + 2 * i + 1] = angle.cos() as f32;
        }
    }
    table
}

/// MAE's 2-D table `[grid_h * grid_w, d]`: the first `d/2` features encode the row with a 1-D
/// sin/cos table of width `d/2` (sines then cosines), the last `d/2` the column.
pub fn sincos_2d_table(grid_h: usize, grid_w: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let quarter = half / 2;
    let one_d = |pos: usize, out: &mut [f32]| {
        for i in 0..quarter {
            let omega = 1.0 / 10000f64.powf(i as f64 / quarter as f64);
            let angle = pos as f64 * omega;
            out[i] = angle.sin() as f32;
            out[quarter + i] = angle.cos() as f32;
        }
    };
    let mut table = vec![0.0f32; grid_h * grid_w * d];
    for r in 0..grid_h {
        for c in 0..grid_w {
            let row = &mut table[(r * grid_w + c) * d..(r * grid_w + c + 1) * d];
            one_d(r, &mut row[..half]);
            one_d(c, &mut row[half..]);
        }
    }
    table
}

/// Rotary tables `cos`, `sin`, each `[len, D]` with `freq[i] = p / base^(2i/D)` repeated over
/// both halves (`cat(freqs, freqs)`, as in GPT-NeoX / HF LLaMA).
pub fn rotary_tables(len: usize, head_dim: usize, base: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let (mut cos, mut sin) = (vec![0.0f32; len * head_dim], vec![0.0f32; len * head_dim]);
    for p in 0..len {
        for i in 0..half {
            let angle = p as f64 / base.powf(2.0 * i as f64 / head_dim as f64);
            for j in [i, i + half] {
                cos[p * head_dim + j] = angle.cos() as f32;
                sin[p * head_dim + j] = angle.sin() as f32;
            }
        }
    }
    (cos, sin)
}

/// The first `rows` rows of a host table `[_, width]` as a tensor `[rows, width]`.
pub(crate) fn table_tensor<B: Backend>(
    table: &[f32],
    rows: usize,
    width: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(table[..rows * width].to_vec(), [rows, width]),
        device,
    )
}

/// Rotary `cos` / `sin` for the current length, shared by every layer of one forward.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    /// `[1, 1, T, D]`.
    pub cos: Tensor<B, 4>,
    /// `[1, 1, T, D]`.
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    /// Rotates queries or keys: `x * cos + rotate_half(x) * sin`, where
    /// `rotate_half([x1, x2]) = [-x2, x1]` over the two halves of the head dim.
    ///
    /// # Shapes
    /// - `x`: `[B, H, T, D]` -> `[B, H, T, D]`
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, heads, seq, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().slice([0..batch, 0..heads, 0..seq, 0..half]);
        let x2 = x.clone().slice([0..batch, 0..heads, 0..seq, half..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3); // [B, H, T, D]
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}
