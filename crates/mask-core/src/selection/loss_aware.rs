//! Loss-aware selection: keeps a running per-token-id difficulty estimate from the per-token
//! losses the learner feeds back ([`Selector::observe`]) and masks harder tokens more often while
//! holding the overall masking rate.
//!
//! In the spirit of adaptive and time-variant masking (Yang et al. 2023, "Learning Better Masking
//! for Better Language Model Pre-training", ACL 2023, which re-weights masking by token type and
//! changes the ratio and content over training) and of loss-driven token selection (masking or
//! training on the tokens the model currently finds hard). It is not a reproduction of either:
//! the estimator and the weighting below are ours.
//!
//! ## State
//! Per token id: a debiased exponential moving average (EMA) of its observed loss, as in Adam's
//! bias correction: `m <- decay * m + (1 - decay) * loss`, `z <- decay * z + (1 - decay)`, and the
//! difficulty is `d = m / z` (the first observation gives `d = loss`, up to rounding; `decay = 0`
//! keeps the last loss). The same debiased EMA of the loss and of its square over *all* observed tokens
//! gives a global mean `mu` and standard deviation `sigma`. An id never observed has difficulty
//! `mu` (lazy initialisation); before any feedback every eligible token weighs the same.
//! Non-finite losses, out-of-range positions and out-of-vocabulary ids are ignored.
//!
//! ## Weights and rate
//! For the `k` eligible positions of an example, with `tau = temperature`,
//! `lambda = uniform_mix`:
//!
//! ```text
//! w_i = (1 - lambda) * k * softmax_i(d_i / (tau * sigma)) + lambda      (mean weight 1)
//! ```
//!
//! floored at `1e-9` so that no eligible position drops out of the rate's denominator. Positions
//! are then drawn by the proportional sampler (`weighted::sample_proportional`):
//! inclusion probabilities `min(1, c * w_i)` summing to `mask_prob * k`, and exactly
//! `floor`/`ceil` of that many positions. The overall rate is therefore held exactly in
//! expectation, with per-example counts within one of the budget; only *which* tokens are masked
//! changes. `temperature` is in units of the loss standard deviation: a token one `sigma` harder
//! than another is `e^(1/tau)` times as likely to be chosen (before mixing and capping at 1).
//!
//! ## Cost
//! `observe`: O(1) per fed-back token. `select`: one `exp` per eligible token plus the sampler.
//! Memory: 24 bytes per vocabulary id (`m`, `z`, count).

use super::weighted::select_weighted;
use super::{SelectScratch, Selector};
use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;

pub(crate) fn default_ema_decay() -> f64 {
    0.99
}
pub(crate) fn default_temperature() -> f64 {
    1.0
}
pub(crate) fn default_uniform_mix() -> f64 {
    0.2
}

/// Largest vocabulary a model-based selector accepts (its state is per id).
pub(crate) const MAX_STATE_VOCAB: u32 = 1 << 26;

/// Smallest weight of an eligible position (keeps it in the rate's denominator).
pub(crate) const MIN_WEIGHT: f64 = 1e-9;

const MAGIC: &[u8; 4] = b"DMLA";
const VERSION: u32 = 1;
const NAME: &str = "loss_aware";

/// Debiased exponential moving average (see the module header).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Ema {
    m: f64,
    z: f64,
}

impl Ema {
    #[inline]
    fn push(&mut self, decay: f64, x: f64) {
        self.m = decay * self.m + (1.0 - decay) * x;
        self.z = decay * self.z + (1.0 - decay);
    }

    #[inline]
    fn value(&self) -> f64 {
        self.m / self.z
    }
}

/// Masks tokens with a high running loss more often, at an unchanged overall rate.
#[derive(Debug, Clone, PartialEq)]
pub struct LossAwareSelector {
    vocab_size: u32,
    ema_decay: f64,
    temperature: f64,
    uniform_mix: f64,
    /// Per id: debiased EMA of the loss.
    per_id: Vec<Ema>,
    /// Per id: number of losses observed.
    counts: Vec<u64>,
    /// Over all tokens: debiased EMA of the loss and of the squared loss.
    global: Ema,
    global_sq: Ema,
    global_count: u64,
}

impl LossAwareSelector {
    /// `vocab_size` in `[1, 2^26]`, `ema_decay` in `[0, 1)`, `temperature` finite and `> 0`,
    /// `uniform_mix` in `[0, 1]`.
    pub fn new(
        vocab_size: u32,
        ema_decay: f64,
        temperature: f64,
        uniform_mix: f64,
    ) -> Result<Self> {
        check_vocab(NAME, vocab_size)?;
        if !(ema_decay.is_finite() && (0.0..1.0).contains(&ema_decay)) {
            return Err(MaskError::InvalidValue {
                field: "ema_decay",
                value: ema_decay.to_string(),
                expected: "a number in [0, 1)",
            });
        }
        check_temperature(temperature)?;
        crate::error::check_prob("uniform_mix", uniform_mix)?;
        Ok(Self {
            vocab_size,
            ema_decay,
            temperature,
            uniform_mix,
            per_id: vec![Ema::default(); vocab_size as usize],
            counts: vec![0; vocab_size as usize],
            global: Ema::default(),
            global_sq: Ema::default(),
            global_count: 0,
        })
    }

    /// Vocabulary size the state covers.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Number of losses observed for `id` (0 outside the vocabulary).
    pub fn observations(&self, id: u32) -> u64 {
        self.counts.get(id as usize).copied().unwrap_or(0)
    }

    /// Number of losses observed in total.
    pub fn total_observations(&self) -> u64 {
        self.global_count
    }

    /// Running mean and standard deviation of all observed losses (`None` before feedback).
    pub fn loss_moments(&self) -> Option<(f64, f64)> {
        if self.global_count == 0 {
            return None;
        }
        let mean = self.global.value();
        let var = (self.global_sq.value() - mean * mean).max(0.0);
        Some((mean, var.sqrt()))
    }

    /// Difficulty of `id`: its running loss, or the global running loss if it was never observed
    /// (0 before any feedback).
    pub fn difficulty(&self, id: u32) -> f64 {
        match self.counts.get(id as usize) {
            Some(&c) if c > 0 => self.per_id[id as usize].value(),
            _ => self.loss_moments().map_or(0.0, |(mean, _)| mean),
        }
    }

    /// The sampling weight of every position of `ex` into `out` (0 at special positions, mean 1
    /// over the eligible ones); see the module header.
    pub fn weights(&self, ex: &Example<'_>, out: &mut Vec<f64>) {
        out.clear();
        let scale = match self.loss_moments() {
            Some((_, sd)) if sd > 0.0 => self.temperature * sd,
            // No feedback yet, or every loss equal: uniform.
            _ => f64::INFINITY,
        };
        out.extend(ex.ids.iter().zip(ex.special_mask).map(|(&id, &s)| {
            if s {
                f64::NAN
            } else {
                self.difficulty(id) / scale
            }
        }));
        mix_softmax(out, self.uniform_mix);
    }
}

impl Selector for LossAwareSelector {
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

    fn observe(&mut self, ids: &[u32], positions: &[u32], losses: &[f32]) {
        let decay = self.ema_decay;
        for (&p, &loss) in positions.iter().zip(losses) {
            let Some(&id) = ids.get(p as usize) else {
                continue;
            };
            if id >= self.vocab_size || !loss.is_finite() {
                continue;
            }
            let x = loss as f64;
            self.per_id[id as usize].push(decay, x);
            self.counts[id as usize] += 1;
            self.global.push(decay, x);
            self.global_sq.push(decay, x * x);
            self.global_count += 1;
        }
    }

    fn state_bytes(&self) -> Option<Vec<u8>> {
        let mut w = StateWriter::new(MAGIC, VERSION);
        w.u32(self.vocab_size);
        w.u64(self.global_count);
        for e in [self.global, self.global_sq] {
            w.f64(e.m);
            w.f64(e.z);
        }
        for (e, &c) in self.per_id.iter().zip(&self.counts) {
            w.u64(c);
            w.f64(e.m);
            w.f64(e.z);
        }
        Some(w.finish())
    }

    fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(NAME, bytes, MAGIC, VERSION)?;
        r.dimension("vocab_size", self.vocab_size)?;
        r.expect_remaining(8 + 32 + self.vocab_size as usize * 24)?;
        let global_count = r.u64()?;
        let global = Ema {
            m: r.f64()?,
            z: r.f64()?,
        };
        let global_sq = Ema {
            m: r.f64()?,
            z: r.f64()?,
        };
        let mut per_id = Vec::with_capacity(self.vocab_size as usize);
        let mut counts = Vec::with_capacity(self.vocab_size as usize);
        for _ in 0..self.vocab_size {
            counts.push(r.u64()?);
            per_id.push(Ema {
                m: r.f64()?,
                z: r.f64()?,
            });
        }
        r.finish()?;
        self.global_count = global_count;
        self.global = global;
        self.global_sq = global_sq;
        self.per_id = per_id;
        self.counts = counts;
        Ok(())
    }
}

/// Turns scores into sampling weights in place: special positions are marked by `NaN` on input
/// and get weight 0; the other `k` get `(1 - mix) * k * softmax(score) + mix`, floored at
/// [`MIN_WEIGHT`]. Non-finite scores of eligible positions (`+-inf`) count as the lowest score.
/// Shared by the loss-aware and learned selectors.
pub(crate) fn mix_softmax(scores: &mut [f64], mix: f64) {
    let mut max = f64::NEG_INFINITY;
    let mut k = 0usize;
    for &s in scores.iter() {
        if !s.is_nan() {
            k += 1;
            if s.is_finite() && s > max {
                max = s;
            }
        }
    }
    if k == 0 {
        scores.fill(0.0);
        return;
    }
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        if s.is_nan() {
            continue;
        }
        // All scores infinite or non-finite: uniform.
        *s = if !max.is_finite() {
            1.0
        } else if s.is_finite() {
            (*s - max).exp()
        } else {
            0.0
        };
        sum += *s;
    }
    // sum >= 1 (the maximum contributes exp(0)).
    let scale = (1.0 - mix) * k as f64 / sum;
    for s in scores.iter_mut() {
        *s = if s.is_nan() {
            0.0
        } else {
            (*s * scale + mix).max(MIN_WEIGHT)
        };
    }
}

pub(crate) fn check_vocab(policy: &'static str, vocab_size: u32) -> Result<()> {
    if vocab_size == 0 {
        return Err(MaskError::MissingResource {
            policy,
            resource: "vocab_size",
        });
    }
    if vocab_size > MAX_STATE_VOCAB {
        return Err(MaskError::InvalidValue {
            field: "vocab_size",
            value: vocab_size.to_string(),
            expected: "at most 2^26 ids for a model-based selector",
        });
    }
    Ok(())
}

pub(crate) fn check_temperature(temperature: f64) -> Result<()> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(())
    } else {
        Err(MaskError::InvalidValue {
            field: "temperature",
            value: temperature.to_string(),
            expected: "a finite number > 0",
        })
    }
}

/// Little-endian state writer: magic, version, then fields. Shared with the learned selector.
pub(crate) struct StateWriter {
    buf: Vec<u8>,
}

impl StateWriter {
    pub(crate) fn new(magic: &[u8; 4], version: u32) -> Self {
        let mut w = Self { buf: Vec::new() };
        w.buf.extend_from_slice(magic);
        w.u32(version);
        w
    }
    pub(crate) fn u32(&mut self, x: u32) {
        self.buf.extend_from_slice(&x.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, x: u64) {
        self.buf.extend_from_slice(&x.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, x: f64) {
        self.u64(x.to_bits());
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reader for [`StateWriter`] output with typed errors.
pub(crate) struct StateReader<'a> {
    policy: &'static str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> StateReader<'a> {
    /// Checks magic and version.
    pub(crate) fn new(
        policy: &'static str,
        bytes: &'a [u8],
        magic: &[u8; 4],
        version: u32,
    ) -> Result<Self> {
        let mut r = Self {
            policy,
            bytes,
            pos: 0,
        };
        let got = r.take(4)?;
        if got != magic {
            return Err(r.error(format!(
                "wrong magic {got:?}, expected {:?} ({})",
                magic,
                String::from_utf8_lossy(magic)
            )));
        }
        let v = r.u32()?;
        if v != version {
            return Err(r.error(format!("unsupported version {v}, expected {version}")));
        }
        Ok(r)
    }

    pub(crate) fn error(&self, reason: String) -> MaskError {
        MaskError::State {
            policy: self.policy,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() - self.pos < n {
            return Err(self.error(format!(
                "truncated: {} bytes, needed at least {}",
                self.bytes.len(),
                self.pos + n
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A float, refused if not finite (the selectors never store one).
    pub(crate) fn f64(&mut self) -> Result<f64> {
        let at = self.pos;
        let x = f64::from_bits(self.u64()?);
        if x.is_finite() {
            Ok(x)
        } else {
            Err(self.error(format!("non-finite value {x} at byte {at}")))
        }
    }

    /// Reads a `u32` dimension and checks it against the selector's.
    pub(crate) fn dimension(&mut self, field: &str, expected: u32) -> Result<()> {
        let got = self.u32()?;
        if got != expected {
            return Err(self.error(format!(
                "`{field}` is {got} in the state but {expected} in the selector"
            )));
        }
        Ok(())
    }

    /// Checks that exactly `n` bytes remain.
    pub(crate) fn expect_remaining(&self, n: usize) -> Result<()> {
        let left = self.bytes.len() - self.pos;
        if left != n {
            return Err(self.error(format!(
                "wrong length: {} bytes, expected {}",
                self.bytes.len(),
                self.pos + n
            )));
        }
        Ok(())
    }

    /// Checks that everything was read.
    pub(crate) fn finish(self) -> Result<()> {
        self.expect_remaining(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_softmax_has_mean_one_and_zero_at_specials() {
        let mut s = vec![f64::NAN, 0.0, 1.0, 2.0, f64::NAN];
        mix_softmax(&mut s, 0.2);
        assert_eq!(s[0], 0.0);
        assert_eq!(s[4], 0.0);
        let mean = (s[1] + s[2] + s[3]) / 3.0;
        assert!((mean - 1.0).abs() < 1e-12, "{s:?}");
        // Ratio of the non-uniform parts is e^1.
        assert!(((s[3] - 0.2) / (s[2] - 0.2) - 1f64.exp()).abs() < 1e-12);
    }

    #[test]
    fn debiased_ema_starts_at_the_first_value() {
        let mut e = Ema::default();
        e.push(0.99, 3.5);
        assert!((e.value() - 3.5).abs() < 1e-12, "{}", e.value());
        e.push(0.0, 1.0);
        assert_eq!(e.value(), 1.0);
    }
}
