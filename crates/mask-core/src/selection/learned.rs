//! Learned mask generator: a small scorer network, trained alongside the main model, that predicts
//! the main model's per-token loss; positions with a high predicted loss are masked more often,
//! at an unchanged overall rate.
//!
//! ## Network
//! For position `i` of a sequence of `n` ids (as given, padding included), with `D = embed_dim`,
//! `H = hidden`, `I = 3D + 2`:
//!
//! ```text
//! x = [E[prev id], E[id], E[next id], i / (n - 1), 1]      (I inputs; E: (vocab + 1) x D)
//! h = tanh(W1 x)                                          (W1: H x I; the constant 1 is the bias)
//! y = w2 . h + b2                                         (predicted loss of the token, nats)
//! ```
//!
//! Row `vocab` of `E` stands for "no neighbour" (sequence ends) and for out-of-vocabulary
//! neighbours. Initialisation is a pure function of `init_seed` through [`MaskRng`]:
//! `E ~ U(-0.5, 0.5)`, `W1 ~ U(-1/sqrt(I), 1/sqrt(I))`, `w2 ~ U(-1/sqrt(H), 1/sqrt(H))`,
//! `b2 = 0`. Everything is `f64`; the state round-trips bit-exactly.
//!
//! ## Objective
//! The main model's masked-token loss is the masker's reward: an adversarial masker wants to
//! hide what the model cannot yet predict. The scorer is a *difficulty predictor*: after every
//! example the learner feeds back ([`Selector::observe`]) it takes one SGD step on
//!
//! ```text
//! J = (1 / m) * sum over the m fed-back positions of 1/2 (y_p - loss_p)^2
//! ```
//!
//! (hand-written backprop; checked against finite differences in the tests). Given the predicted
//! losses, choosing the positions with the highest prediction under the rate budget is the greedy
//! maximiser of the expected masked loss; we soften it to a sampler,
//!
//! ```text
//! w_i = (1 - uniform_mix) * k * softmax_i(y_i / temperature) + uniform_mix   (k eligible positions)
//! ```
//!
//! drawn by the proportional sampler (`weighted::sample_proportional`), which holds the
//! rate exactly in expectation (`floor`/`ceil` of `mask_prob * k` positions). The uniform share
//! keeps every token observable, so the predictor keeps learning about tokens it rates easy.
//! This is in the spirit of Neural Mask Generator (Kang et al. 2020, "Neural Mask Generator:
//! Learning to Generate Adaptive Word Maskings for Language Model Adaptation", EMNLP 2020), which
//! instead trains its mask policy by reinforcement learning on the *downstream* task reward; here
//! the reward is the main model's own MLM loss and the policy is a regression plus a softmax,
//! which needs no rollouts and no second model evaluation. `temperature` is in nats of predicted
//! loss. Only masked positions are fed back, so the predictor learns from the distribution it
//! masks (biased towards what it rates hard; `uniform_mix` bounds that bias).
//!
//! ## Cost (`D = 8`, `H = 16`, `I = 26` by default)
//! - Scoring, per token of every example: `2 H I + 2 H` = 864 FLOPs and `H` tanh.
//! - Update, per fed-back (masked) token: forward 864 + backward `2 H I` (dW1) + `2 H 3D` (dx)
//!   + `4 H` ~ 2.5 kFLOPs; per example, `H I + H + 1 + 3 D m` parameter writes.
//! - Memory: `8 ((vocab + 1) D + H I + H + 1)` bytes (checkpoint: 28 bytes more), 1.96 MB for
//!   BERT's 30522 ids. A BERT-base forward pass costs ~2 x 110 M FLOPs per token, so at 15%
//!   masking the scorer adds ~1.2 kFLOPs per token, under 1e-5 of the main model's compute.

use super::loss_aware::{check_temperature, check_vocab, mix_softmax, StateReader, StateWriter};
use super::weighted::select_weighted;
use super::{SelectScratch, Selector};
use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;

pub(crate) fn default_embed_dim() -> u32 {
    8
}
pub(crate) fn default_hidden() -> u32 {
    16
}
pub(crate) fn default_learning_rate() -> f64 {
    0.05
}
pub(crate) fn default_init_seed() -> u64 {
    0
}

const MAGIC: &[u8; 4] = b"DMLN";
const VERSION: u32 = 1;
const NAME: &str = "learned";
/// Random stream of the initialisation ("learned" in ASCII).
const INIT_STREAM: u64 = 0x006c_6561_726e_6564;
/// Largest number of embedding parameters, `(vocab + 1) * embed_dim`.
const MAX_EMBED_PARAMS: u64 = 1 << 28;

/// A small MLP that predicts each token's loss; masks high-predicted-loss tokens more often.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedSelector {
    vocab_size: u32,
    embed_dim: usize,
    hidden: usize,
    learning_rate: f64,
    temperature: f64,
    uniform_mix: f64,
    /// Number of SGD steps taken.
    updates: u64,
    /// All parameters: `E` (row-major), `W1` (row-major), `w2`, `b2`.
    params: Vec<f64>,
}

impl LearnedSelector {
    /// `vocab_size` in `[1, 2^26]`, `embed_dim` in `[1, 256]`, `hidden` in `[1, 1024]`,
    /// `(vocab_size + 1) * embed_dim <= 2^28`, `learning_rate` finite and `>= 0`,
    /// `temperature` finite and `> 0`, `uniform_mix` in `[0, 1]`.
    pub fn new(
        vocab_size: u32,
        embed_dim: u32,
        hidden: u32,
        learning_rate: f64,
        temperature: f64,
        uniform_mix: f64,
        init_seed: u64,
    ) -> Result<Self> {
        check_vocab(NAME, vocab_size)?;
        if !(1..=256).contains(&embed_dim)
            || (vocab_size as u64 + 1) * embed_dim as u64 > MAX_EMBED_PARAMS
        {
            return Err(MaskError::InvalidValue {
                field: "embed_dim",
                value: embed_dim.to_string(),
                expected: "an integer in [1, 256] with (vocab_size + 1) * embed_dim <= 2^28",
            });
        }
        if !(1..=1024).contains(&hidden) {
            return Err(MaskError::InvalidValue {
                field: "hidden",
                value: hidden.to_string(),
                expected: "an integer in [1, 1024]",
            });
        }
        if !(learning_rate.is_finite() && learning_rate >= 0.0) {
            return Err(MaskError::InvalidValue {
                field: "learning_rate",
                value: learning_rate.to_string(),
                expected: "a finite number >= 0",
            });
        }
        check_temperature(temperature)?;
        crate::error::check_prob("uniform_mix", uniform_mix)?;
        let mut s = Self {
            vocab_size,
            embed_dim: embed_dim as usize,
            hidden: hidden as usize,
            learning_rate,
            temperature,
            uniform_mix,
            updates: 0,
            params: Vec::new(),
        };
        s.params = vec![0.0; s.num_parameters()];
        let mut rng = MaskRng::for_example(init_seed, 0, 0, INIT_STREAM);
        let mut uniform = |a: f64| (2.0 * rng.next_f64() - 1.0) * a;
        let (w1, w2, b2) = (s.w1_offset(), s.w2_offset(), s.b2_offset());
        let a_w1 = 1.0 / (s.inputs() as f64).sqrt();
        let a_w2 = 1.0 / (s.hidden as f64).sqrt();
        for (k, p) in s.params.iter_mut().enumerate() {
            *p = if k < w1 {
                uniform(0.5)
            } else if k < w2 {
                uniform(a_w1)
            } else if k < b2 {
                uniform(a_w2)
            } else {
                0.0
            };
        }
        Ok(s)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Number of SGD steps taken so far (examples fed back with at least one usable loss).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Number of parameters: `(vocab + 1) D + H (3D + 2) + H + 1`.
    pub fn num_parameters(&self) -> usize {
        self.b2_offset() + 1
    }

    /// All parameters, flat: `E` (row-major, `(vocab + 1) x D`), `W1` (row-major, `H x (3D + 2)`),
    /// `w2` (`H`), `b2`.
    pub fn parameters(&self) -> &[f64] {
        &self.params
    }

    /// Replaces all parameters (layout of [`LearnedSelector::parameters`]); refuses a wrong
    /// length or non-finite values.
    pub fn set_parameters(&mut self, params: &[f64]) -> Result<()> {
        if params.len() != self.params.len() {
            return Err(MaskError::LengthMismatch {
                field: "params",
                expected: self.params.len(),
                got: params.len(),
            });
        }
        if let Some(k) = params.iter().position(|p| !p.is_finite()) {
            return Err(MaskError::InvalidValue {
                field: "params",
                value: format!("{} at index {k}", params[k]),
                expected: "finite parameters",
            });
        }
        self.params.copy_from_slice(params);
        Ok(())
    }

    /// Predicted loss of the token at `position` of `ids` (`None` if out of range).
    pub fn predict(&self, ids: &[u32], position: usize) -> Option<f64> {
        if position >= ids.len() {
            return None;
        }
        let mut x = vec![0.0; self.inputs()];
        let mut h = vec![0.0; self.hidden];
        Some(self.forward(ids, position, &mut x, &mut h))
    }

    /// The training objective on one example's feedback: mean over the usable pairs of
    /// `1/2 (prediction - loss)^2` (0 if none). Pairs with a position outside `ids`, an
    /// out-of-vocabulary id or a non-finite loss are not usable.
    pub fn objective(&self, ids: &[u32], positions: &[u32], losses: &[f32]) -> f64 {
        let pairs = self.usable(ids, positions, losses);
        if pairs.is_empty() {
            return 0.0;
        }
        let mut x = vec![0.0; self.inputs()];
        let mut h = vec![0.0; self.hidden];
        let sum: f64 = pairs
            .iter()
            .map(|&(i, loss)| {
                let e = self.forward(ids, i, &mut x, &mut h) - loss;
                0.5 * e * e
            })
            .sum();
        sum / pairs.len() as f64
    }

    /// Gradient of [`LearnedSelector::objective`] with respect to every parameter (layout of
    /// [`LearnedSelector::parameters`]); dense, for checks. [`Selector::observe`] takes the step
    /// `params -= learning_rate * gradient` with a sparse embedding update.
    pub fn gradient(&self, ids: &[u32], positions: &[u32], losses: &[f32]) -> Vec<f64> {
        let mut g = vec![0.0; self.params.len()];
        let pairs = self.usable(ids, positions, losses);
        let w1 = self.w1_offset();
        let (emb, head) = g.split_at_mut(w1);
        let d = self.embed_dim;
        self.backward(ids, &pairs, head, |row, dx| {
            for (a, b) in emb[row * d..(row + 1) * d].iter_mut().zip(dx) {
                *a += b;
            }
        });
        g
    }

    /// The sampling weight of every position of `ex` into `out` (0 at special positions, mean 1
    /// over the eligible ones); see the module header.
    pub fn weights(&self, ex: &Example<'_>, out: &mut Vec<f64>) {
        let (n, ni, nh) = (ex.len(), self.inputs(), self.hidden);
        out.clear();
        out.resize(n + ni + nh, 0.0);
        let (w, tmp) = out.split_at_mut(n);
        let (x, h) = tmp.split_at_mut(ni);
        for i in 0..n {
            w[i] = if ex.special_mask[i] {
                f64::NAN
            } else {
                self.forward(ex.ids, i, x, h) / self.temperature
            };
        }
        out.truncate(n);
        mix_softmax(out, self.uniform_mix);
    }

    // ---- layout -------------------------------------------------------------------------

    fn inputs(&self) -> usize {
        3 * self.embed_dim + 2
    }
    fn w1_offset(&self) -> usize {
        (self.vocab_size as usize + 1) * self.embed_dim
    }
    fn w2_offset(&self) -> usize {
        self.w1_offset() + self.hidden * self.inputs()
    }
    fn b2_offset(&self) -> usize {
        self.w2_offset() + self.hidden
    }

    /// Embedding rows of the previous, current and next token of position `i`.
    #[inline]
    fn rows(&self, ids: &[u32], i: usize) -> [usize; 3] {
        let v = self.vocab_size;
        let row = |id: Option<&u32>| match id {
            Some(&id) if id < v => id as usize,
            _ => v as usize,
        };
        [
            row(i.checked_sub(1).and_then(|j| ids.get(j))),
            row(ids.get(i)),
            row(ids.get(i + 1)),
        ]
    }

    /// Fills the input `x` and hidden activations `h` of position `i` and returns the prediction.
    fn forward(&self, ids: &[u32], i: usize, x: &mut [f64], h: &mut [f64]) -> f64 {
        let d = self.embed_dim;
        for (slot, r) in self.rows(ids, i).into_iter().enumerate() {
            x[slot * d..(slot + 1) * d].copy_from_slice(&self.params[r * d..(r + 1) * d]);
        }
        let n = ids.len();
        x[3 * d] = if n > 1 {
            i as f64 / (n - 1) as f64
        } else {
            0.0
        };
        x[3 * d + 1] = 1.0;
        let ni = self.inputs();
        let w1 = &self.params[self.w1_offset()..self.w2_offset()];
        let w2 = &self.params[self.w2_offset()..self.b2_offset()];
        let mut y = self.params[self.b2_offset()];
        for j in 0..self.hidden {
            let row = &w1[j * ni..(j + 1) * ni];
            let z: f64 = row.iter().zip(x.iter()).map(|(a, b)| a * b).sum();
            h[j] = z.tanh();
            y += w2[j] * h[j];
        }
        y
    }

    /// Usable `(position, loss)` pairs of one example's feedback.
    fn usable(&self, ids: &[u32], positions: &[u32], losses: &[f32]) -> Vec<(usize, f64)> {
        positions
            .iter()
            .zip(losses)
            .filter(|&(&p, &l)| {
                l.is_finite() && ids.get(p as usize).is_some_and(|&id| id < self.vocab_size)
            })
            .map(|(&p, &l)| (p as usize, l as f64))
            .collect()
    }

    /// Accumulates the gradient of the objective: `W1`, `w2`, `b2` into `head` (laid out as in
    /// `params` after the embeddings), and hands each embedding-row gradient to `emb`.
    fn backward(
        &self,
        ids: &[u32],
        pairs: &[(usize, f64)],
        head: &mut [f64],
        mut emb: impl FnMut(usize, &[f64]),
    ) {
        if pairs.is_empty() {
            return;
        }
        let (d, nh, ni) = (self.embed_dim, self.hidden, self.inputs());
        let (gw1, rest) = head.split_at_mut(nh * ni);
        let (gw2, gb2) = rest.split_at_mut(nh);
        let w1 = &self.params[self.w1_offset()..self.w2_offset()];
        let w2 = &self.params[self.w2_offset()..self.b2_offset()];
        let mut x = vec![0.0; ni];
        let mut h = vec![0.0; nh];
        let mut dx = vec![0.0; 3 * d];
        let inv_m = 1.0 / pairs.len() as f64;
        for &(i, loss) in pairs {
            let y = self.forward(ids, i, &mut x, &mut h);
            let dy = (y - loss) * inv_m;
            gb2[0] += dy;
            dx.fill(0.0);
            for j in 0..nh {
                gw2[j] += dy * h[j];
                let dz = dy * w2[j] * (1.0 - h[j] * h[j]);
                let row = &w1[j * ni..(j + 1) * ni];
                let grow = &mut gw1[j * ni..(j + 1) * ni];
                for k in 0..ni {
                    grow[k] += dz * x[k];
                }
                for k in 0..3 * d {
                    dx[k] += row[k] * dz;
                }
            }
            for (slot, r) in self.rows(ids, i).into_iter().enumerate() {
                emb(r, &dx[slot * d..(slot + 1) * d]);
            }
        }
    }
}

impl Selector for LearnedSelector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_adaptive(&self) -> bool {
        true
    }

    fn select(
        &self,
        ex: &Example<'_>,
        mask_prob: f64,
        rng: &mut MaskRng,
        scratch: &mut SelectScratch,
        out: &mut Vec<Span>,
    ) {
        select_weighted(mask_prob, rng, scratch, out, |w| self.weights(ex, w));
    }

    /// One SGD step on the example's feedback (see the module header).
    fn observe(&mut self, ids: &[u32], positions: &[u32], losses: &[f32]) {
        let pairs = self.usable(ids, positions, losses);
        if pairs.is_empty() {
            return;
        }
        let w1 = self.w1_offset();
        let mut head = vec![0.0; self.params.len() - w1];
        let mut emb_rows = Vec::with_capacity(3 * pairs.len());
        let mut emb_grads = Vec::with_capacity(3 * pairs.len() * self.embed_dim);
        self.backward(ids, &pairs, &mut head, |row, dx| {
            emb_rows.push(row);
            emb_grads.extend_from_slice(dx);
        });
        if !head.iter().chain(&emb_grads).all(|g| g.is_finite()) {
            return;
        }
        let (lr, d) = (self.learning_rate, self.embed_dim);
        for (p, g) in self.params[w1..].iter_mut().zip(&head) {
            *p -= lr * g;
        }
        for (&r, g) in emb_rows.iter().zip(emb_grads.chunks_exact(d)) {
            for (p, g) in self.params[r * d..(r + 1) * d].iter_mut().zip(g) {
                *p -= lr * g;
            }
        }
        self.updates += 1;
    }

    fn state_bytes(&self) -> Option<Vec<u8>> {
        let mut w = StateWriter::new(MAGIC, VERSION);
        w.u32(self.vocab_size);
        w.u32(self.embed_dim as u32);
        w.u32(self.hidden as u32);
        w.u64(self.updates);
        for &p in &self.params {
            w.f64(p);
        }
        Some(w.finish())
    }

    fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(NAME, bytes, MAGIC, VERSION)?;
        r.dimension("vocab_size", self.vocab_size)?;
        r.dimension("embed_dim", self.embed_dim as u32)?;
        r.dimension("hidden", self.hidden as u32)?;
        r.expect_remaining(8 + 8 * self.params.len())?;
        let updates = r.u64()?;
        let mut params = Vec::with_capacity(self.params.len());
        for _ in 0..self.params.len() {
            params.push(r.f64()?);
        }
        r.finish()?;
        self.updates = updates;
        self.params = params;
        Ok(())
    }
}
