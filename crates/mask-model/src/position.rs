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

/// MAE's 2-D table `[grid_h * grid_w, d]` (`get_2d_sincos_pos_embed`): patch `(r, c)` is row
/// `r * grid_w + c`; its first `d/2` features encode the *column* `c` with a 1-D sin/cos table of
/// width `d/2` (sines then cosines, `omega_i = 1 / 10000^(i / (d/4))`), the last `d/2` the row
/// `r`. (MAE's `np.meshgrid(grid_w, grid_h)` puts the column index first, although the code names
/// that half `emb_h`.)
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
            one_d(c, &mut row[..half]);
            one_d(r, &mut row[half..]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() < 1e-6
    }

    /// Reference values by hand: `angle = p / 10000^(2i/d)`; at d = 4 the frequencies are 1 and
    /// 1/100.
    #[test]
    fn sinusoid_table_by_hand() {
        let t = sinusoid_table(3, 4);
        let want = [
            [0.0, 1.0, 0.0, 1.0],
            [1f64.sin(), 1f64.cos(), 0.01f64.sin(), 0.01f64.cos()],
            [2f64.sin(), 2f64.cos(), 0.02f64.sin(), 0.02f64.cos()],
        ];
        for (p, row) in want.iter().enumerate() {
            for (k, &w) in row.iter().enumerate() {
                assert!(
                    close(t[p * 4 + k], w),
                    "p {p} k {k}: {} vs {w}",
                    t[p * 4 + k]
                );
            }
        }
    }

    /// MAE's `get_2d_sincos_pos_embed(8, grid)` on a 2 x 3 grid, written out from its numpy
    /// code: d/2 = 4 features per axis, omega = (1, 1/100); the first half from the column.
    #[test]
    fn sincos_2d_table_matches_mae() {
        let (h, w, d) = (2, 3, 8);
        let t = sincos_2d_table(h, w, d);
        let one_d = |pos: f64| {
            let (a, b) = (pos, pos / 100.0);
            [a.sin(), b.sin(), a.cos(), b.cos()]
        };
        for r in 0..h {
            for c in 0..w {
                let want: Vec<f64> = one_d(c as f64).into_iter().chain(one_d(r as f64)).collect();
                let got = &t[(r * w + c) * d..(r * w + c + 1) * d];
                for k in 0..d {
                    assert!(
                        close(got[k], want[k]),
                        "({r}, {c}) k {k}: {} vs {}",
                        got[k],
                        want[k]
                    );
                }
            }
        }
        // Patch (0, 1) differs from (1, 0) exactly by swapping the halves.
        assert_eq!(t[8..12], t[3 * 8 + 4..3 * 8 + 8]);
    }

    /// Rotary (GPT-NeoX / HF LLaMA layout): `freq_i = p / base^(2i/D)` repeated over both halves.
    /// At D = 4, base 10000: frequencies 1 and 1/100.
    #[test]
    fn rotary_tables_by_hand() {
        let (cos, sin) = rotary_tables(2, 4, 10000.0);
        let f = [1.0f64, 0.01];
        for k in 0..4 {
            assert!(close(cos[k], 1.0) && close(sin[k], 0.0));
            assert!(close(cos[4 + k], f[k % 2].cos()), "{k}");
            assert!(close(sin[4 + k], f[k % 2].sin()), "{k}");
        }
    }

    /// Rotating by position p and q preserves dot products up to the offset q - p (the point of
    /// rotary embeddings): <R_p x, R_q y> depends on q - p only.
    #[test]
    fn rotary_dot_products_depend_on_the_offset_only() {
        use burn::backend::NdArray;
        type B = NdArray<f32>;
        let device = Default::default();
        let (len, d) = (6, 4);
        let (cos, sin) = rotary_tables(len, d, 10000.0);
        let rope = Rope::<B> {
            cos: table_tensor::<B>(&cos, len, d, &device).unsqueeze::<4>(),
            sin: table_tensor::<B>(&sin, len, d, &device).unsqueeze::<4>(),
        };
        // The same vector at every position: after rotation, <x_p, x_q> is a function of q - p.
        let x = Tensor::<B, 2>::from_data([[0.3, -1.2, 0.7, 2.0]], &device)
            .repeat_dim(0, len)
            .reshape([1, 1, len, d]);
        let r = rope.apply(x).reshape([len, d]);
        let gram: Vec<f32> = r
            .clone()
            .matmul(r.transpose())
            .into_data()
            .to_vec()
            .unwrap();
        for p in 0..len - 3 {
            let (a, b) = (gram[p * len + p + 2], gram[(p + 1) * len + p + 3]);
            assert!((a - b).abs() < 1e-5, "offset 2 at {p}: {a} vs {b}");
        }
    }
}
