//! The built-in tasks, one file each: [`mlm`] (masked LM), [`classification`] (sequence
//! classification: fine-tuning, and the linear probe on frozen features),
//! [`token_classification`] (tagging, e.g. the POS probe), [`mae`] (masked image modelling),
//! [`bert4rec`] (item Cloze), [`causal_lm`] (next-token prediction) and [`multitask`] (several
//! objectives, each with its own masks, on one shared encoder: UniLM).

pub mod bert4rec;
pub mod causal_lm;
pub mod classification;
pub mod mae;
pub mod mlm;
pub mod multitask;
pub mod token_classification;

use mask_data::collate::Fnv;
use mask_data::Encoded;

/// A digest of tokenized documents (their ids, document boundaries included), binding a run to
/// its data: a checkpoint trained on other documents is refused.
pub fn docs_digest<'a>(docs: impl IntoIterator<Item = &'a Encoded>) -> String {
    let mut h = Fnv::default();
    let mut n = 0u32;
    for d in docs {
        h.eat(d.ids.len() as u32);
        d.ids.iter().for_each(|&i| h.eat(i));
        n += 1;
    }
    h.eat(n);
    format!("{:016x}", h.0)
}

/// Rows `rows` (in that order) of a padded `[B * T]` buffer: a data-parallel peer's share.
pub(crate) fn pick_rows<X: Copy>(values: &[X], t: usize, rows: &[usize]) -> Vec<X> {
    rows.iter()
        .flat_map(|&r| values[r * t..(r + 1) * t].iter().copied())
        .collect()
}

/// The tokenizer and data bindings of a text task.
pub(crate) fn text_bindings(tokenizer: &str, data: String) -> Vec<(String, String)> {
    vec![
        ("tokenizer".to_string(), tokenizer.to_string()),
        ("data".to_string(), data),
    ]
}

/// Encoder states `[B, T, d]` of padded ids `[B * T]`: through autodiff, or (`frozen`) on the
/// inner backend, lifted back as a constant, so no gradient reaches the encoder and it costs no
/// backward pass.
pub(crate) fn encoder_states<B: burn::tensor::backend::AutodiffBackend>(
    encoder: &mask_model::TextEncoder<B>,
    ids: &[u32],
    rows: usize,
    mask: &dyn mask_model::mask_attn::AttnMask,
    frozen: bool,
    device: &B::Device,
) -> crate::Result<burn::prelude::Tensor<B, 3>> {
    use burn::module::AutodiffModule;
    let vocab = encoder.vocab_size;
    Ok(if frozen {
        let x = mask_model::ids_tensor::<B::InnerBackend>("input_ids", ids, rows, vocab, device)?;
        burn::prelude::Tensor::from_inner(encoder.valid().forward(x, mask)?)
    } else {
        encoder.forward(
            mask_model::ids_tensor::<B>("input_ids", ids, rows, vocab, device)?,
            mask,
        )?
    })
}
