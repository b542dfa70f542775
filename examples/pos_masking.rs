//! Part-of-speech-weighted masking on real text.
//!
//! Loads the first 4,000 tagged sentences of the Brown Corpus vendored in
//! `crates/mask-data/data/` (one token per word, each tagged with a coarse class: NOUN, VERB,
//! ADJ, ADV, FUNC, PUNCT, OTHER; mapping documented in `mask_data::pos`)
//! and masks every sentence at 10 epochs with the default uniform Bernoulli selection and with
//! tag-weighted selection (NOUN 3, VERB 2, ADJ 2, ADV 1, FUNC 0.5, PUNCT 0.25, OTHER 1), both at
//! 15%. For each class it prints its share of the tokens, its target weight, the expected
//! masking rate (mean inclusion probability) and the realised one.
//!
//! Run: `cargo run --release --example pos_masking`

use mask_data::pos as brown;

use std::sync::Arc;

use mask_core::selection::weighted::inclusion_probabilities;
use mask_core::{
    Example, MaskContext, MaskPolicy, MaskingConfig, RateSchedule, Scratch, SelectionConfig,
    SelectorResources, TagWeights, TokenMasker, VocabSpec, IGNORE_INDEX,
};

const WEIGHTS: [f64; 7] = [3.0, 2.0, 2.0, 1.0, 0.5, 0.25, 1.0];
const MASK_PROB: f64 = 0.15;
const EPOCHS: u64 = 10;

/// Per class: tokens, expected masks (sum of inclusion probabilities), realised masks.
fn measure(
    policy: &TokenMasker,
    enc: &brown::WordLevel,
    weights: Option<&TagWeights>,
) -> mask_core::Result<[[f64; 3]; 7]> {
    let mut acc = [[0f64; 3]; 7];
    let (mut w, mut pi) = (vec![], vec![]);
    let mut scratch = Scratch::default();
    for epoch in 0..EPOCHS {
        for (i, ((ids, special), tags)) in
            enc.ids.iter().zip(&enc.special).zip(&enc.tags).enumerate()
        {
            let ex = Example::new(ids, special).with_tags(tags);
            let (mut out, mut labels) = (vec![0; ids.len()], vec![0; ids.len()]);
            let ctx = MaskContext::new(2024, epoch, i as u64, 0);
            policy.mask_into(&ex, &ctx, &mut scratch, &mut out, &mut labels)?;
            w.clear();
            w.extend(tags.iter().zip(special).map(|(&t, &s)| match (s, weights) {
                (true, _) => 0.0,
                (false, Some(tw)) => tw.weight(t),
                (false, None) => 1.0,
            }));
            let eligible = special.iter().filter(|&&s| !s).count() as f64;
            inclusion_probabilities(&w, MASK_PROB * eligible, &mut pi);
            for p in (0..ids.len()).filter(|&p| !special[p]) {
                let a = &mut acc[tags[p] as usize];
                a[0] += 1.0;
                a[1] += if weights.is_some() { pi[p] } else { MASK_PROB };
                a[2] += f64::from(u8::from(labels[p] != IGNORE_INDEX));
            }
        }
    }
    Ok(acc)
}

fn print_table(title: &str, acc: &[[f64; 3]; 7], weights: Option<&[f64]>) {
    let total: f64 = acc.iter().map(|a| a[0]).sum();
    println!("\n{title}");
    println!(
        "{:<6} {:>7} {:>7} {:>9} {:>9}",
        "class", "share", "weight", "expected", "realised"
    );
    for (c, a) in acc.iter().enumerate() {
        println!(
            "{:<6} {:>7.3} {:>7.2} {:>9.4} {:>9.4}",
            brown::CLASSES[c],
            a[0] / total,
            weights.map_or(1.0, |w| w[c]),
            a[1] / a[0],
            a[2] / a[0]
        );
    }
    let masked: f64 = acc.iter().map(|a| a[2]).sum();
    println!(
        "{:<6} {:>7.3} {:>7} {:>9.4} {:>9.4}",
        "all",
        1.0,
        "",
        MASK_PROB,
        masked / total
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sents = brown::sentences()?;
    let enc = brown::word_level(&sents);
    let tokens: usize = sents.iter().map(|s| s.words.len()).sum();
    println!(
        "Brown Corpus subset: {} sentences, {tokens} words, vocabulary {} ids; {EPOCHS} epochs, rate {MASK_PROB}",
        sents.len(),
        enc.vocab_size
    );
    let vocab = VocabSpec::new(
        enc.vocab_size,
        brown::MASK,
        vec![brown::PAD, brown::CLS, brown::SEP, brown::MASK],
    );
    let base = MaskingConfig::new(vocab).with_rate(RateSchedule::constant(MASK_PROB));
    let bernoulli = base.build()?;
    print_table(
        "Bernoulli (uniform, HF collator)",
        &measure(&bernoulli, &enc, None)?,
        None,
    );
    let weights = Arc::new(TagWeights::new(WEIGHTS.to_vec())?);
    let res = SelectorResources {
        tag_weights: Some(weights.clone()),
        ..Default::default()
    };
    let tagged = base
        .with_selection(SelectionConfig::TagWeighted {})
        .build_with(&res)?;
    print_table(
        "Tag-weighted (inclusion probability proportional to the class weight)",
        &measure(&tagged, &enc, Some(&weights))?,
        Some(&WEIGHTS),
    );
    Ok(())
}
