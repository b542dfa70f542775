//! Decoder-only causal language model (Radford et al. 2018/2019, GPT): the encoder run under a
//! causal mask (intersected with any extra mask: padding, documents, windows), then logits
//! against the tied token embedding or an untied `lm_head`.
//!
//! Legend: B batch, T positions, d `d_model`, V vocabulary.

use std::ops::Range;

use burn::nn::Linear;
use burn::prelude::*;
use mask_attn::{AttnMask, TileKind};

use crate::config::TextEncoderConfig;
use crate::encoder::TextEncoder;
use crate::init::linear;

/// Configuration of a [`CausalLmModel`].
#[derive(Config, Debug)]
pub struct CausalLmConfig {
    /// The decoder stack (usually pre-LN; see the `gpt-tiny` preset).
    pub encoder: TextEncoderConfig,
    /// Use the token embedding as the output matrix. Default: true
    #[config(default = true)]
    pub tie_embeddings: bool,
}

/// Decoder + LM head.
#[derive(Module, Debug)]
pub struct CausalLmModel<B: Backend> {
    /// The decoder stack.
    pub encoder: TextEncoder<B>,
    /// Untied output layer `d -> V` without bias (`lm_head`), if not tied.
    pub lm_head: Option<Linear<B>>,
}

impl CausalLmConfig {
    /// Builds the model, validating the config first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<CausalLmModel<B>> {
        let t = &self.encoder.transformer;
        let model = CausalLmModel {
            encoder: self.encoder.init(device)?,
            lm_head: (!self.tie_embeddings).then(|| {
                linear(
                    t.d_model,
                    self.encoder.vocab_size,
                    t.init_std,
                    false,
                    device,
                )
            }),
        };
        crate::init::materialize(&model);
        Ok(model)
    }
}

impl<B: Backend> CausalLmModel<B> {
    /// Next-token logits at every position. Causality is built in: position t sees keys
    /// `<= t` that `extra` (if any) also allows.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]` -> `[B, T, V]`
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        extra: Option<&dyn AttnMask>,
    ) -> crate::Result<Tensor<B, 3>> {
        let mask = CausalAnd(extra);
        let hidden = self.encoder.forward(ids, &mask)?; // [B, T, d]
        let [batch, seq, d] = hidden.dims();
        let flat = hidden.reshape([batch * seq, d]); // [B*T, d]
        let logits = match &self.lm_head {
            Some(head) => head.forward(flat),
            None => flat.matmul(self.encoder.word_embeddings.weight.val().transpose()),
        };
        Ok(logits.reshape([batch, seq, self.encoder.vocab_size])) // [B, T, V]
    }
}

/// `causal AND extra`, borrowing `extra` (the owned `And` needs `'static` children).
#[derive(Debug)]
struct CausalAnd<'a>(Option<&'a dyn AttnMask>);

fn causal_tile(q: &Range<usize>, k: &Range<usize>) -> TileKind {
    if k.start > q.end - 1 {
        TileKind::Empty
    } else if k.end - 1 <= q.start {
        TileKind::Full
    } else {
        TileKind::Partial
    }
}

impl AttnMask for CausalAnd<'_> {
    fn name(&self) -> &'static str {
        "causal_and"
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        k <= q && self.0.is_none_or(|m| m.allows(b, h, q, k))
    }
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        let causal = causal_tile(&q, &k);
        let Some(extra) = self.0 else { return causal };
        match (causal, extra.classify(b, h, q.clone(), k.clone())) {
            (TileKind::Empty, _) | (_, TileKind::Empty) => TileKind::Empty,
            (TileKind::Full, other) | (other, TileKind::Full) => other,
            // Two partial halves may still leave the tile empty: decide exactly.
            _ => mask_attn::mask::scan_tile(self, b, h, q, k),
        }
    }
    fn head_dependent(&self) -> bool {
        self.0.is_some_and(|m| m.head_dependent())
    }
    fn batch_size(&self) -> Option<usize> {
        self.0.and_then(|m| m.batch_size())
    }
    fn seq_len(&self) -> Option<usize> {
        self.0.and_then(|m| m.seq_len())
    }
    fn is_causal(&self) -> bool {
        self.0.is_none_or(|m| m.is_allow_all())
    }
}
