//! Part-of-speech-weighted masking on real text: the first 4,000 sentences of the tagged Brown
//! Corpus (vendored; see `data/README.md`), one token per word, each token tagged with its
//! coarse class (mapping in `mask_data::pos`).
//!
//! With class weights NOUN 3, VERB 2, ADJ 2, ADV 1, FUNC 0.5, PUNCT 0.25, OTHER 1 at a 15%
//! rate, the realised per-class masking count over many (epoch, sentence) draws must equal the
//! sum of the inclusion probabilities of the class's tokens within six binomial standard
//! deviations (`sqrt(sum pi (1 - pi))`; draws of different sentences and epochs are
//! independent); nouns must be masked more often than function words; and the overall rate
//! must be 15% (each sequence masks floor or ceil of its budget).

use std::sync::Arc;

use mask_core::selection::weighted::inclusion_probabilities;
use mask_core::*;
use mask_data::pos as brown;

const WEIGHTS: [f64; 7] = [3.0, 2.0, 2.0, 1.0, 0.5, 0.25, 1.0];
const MASK_PROB: f64 = 0.15;
const EPOCHS: u64 = 4;

#[test]
fn the_brown_mapping_covers_the_corpus_sensibly() {
    let sents = brown::sentences().unwrap();
    assert_eq!(sents.len(), 4000);
    let mut counts = [0usize; 7];
    for s in &sents {
        assert_eq!(s.words.len(), s.classes.len());
        for &c in &s.classes {
            counts[c as usize] += 1;
        }
    }
    let n: usize = counts.iter().sum();
    // Nouns and function words dominate news text; OTHER (numbers, foreign words, ...) is rare.
    assert!(counts[0] as f64 > 0.25 * n as f64, "{counts:?}");
    assert!(counts[4] as f64 > 0.2 * n as f64, "{counts:?}");
    assert!((counts[6] as f64) < 0.05 * n as f64, "{counts:?}");
    for (tag, class) in [
        ("nn", "NOUN"),
        ("np-tl", "NOUN"),
        ("nns$", "NOUN"),
        ("vbd", "VERB"),
        ("bedz", "VERB"),
        ("hvd", "VERB"),
        ("jj-tl", "ADJ"),
        ("rbr", "ADV"),
        ("at", "FUNC"),
        ("ppss+md", "FUNC"),
        ("wdt", "FUNC"),
        ("*", "FUNC"),
        ("''", "PUNCT"),
        ("--", "PUNCT"),
        (".", "PUNCT"),
        ("cd", "OTHER"),
        ("fw-nn", "OTHER"),
    ] {
        assert_eq!(
            brown::CLASSES[brown::coarse_class(tag) as usize],
            class,
            "{tag}"
        );
    }
}

#[test]
fn pos_weighted_masking_matches_its_inclusion_probabilities_on_brown() {
    let enc = brown::word_level(&brown::sentences().unwrap());
    let weights = Arc::new(TagWeights::new(WEIGHTS.to_vec()).unwrap());
    let res = SelectorResources {
        tag_weights: Some(weights.clone()),
        ..Default::default()
    };
    let vocab = VocabSpec::new(
        enc.vocab_size,
        brown::MASK,
        vec![brown::PAD, brown::CLS, brown::SEP, brown::MASK],
    );
    let policy = MaskingConfig::new(vocab)
        .with_rate(RateSchedule::constant(MASK_PROB))
        .with_selection(SelectionConfig::TagWeighted {})
        .build_with(&res)
        .unwrap();
    let (mut hits, mut expect, mut var, mut tokens) = ([0f64; 7], [0f64; 7], [0f64; 7], [0f64; 7]);
    let (mut total_masked, mut total_budget, mut n_seq) = (0f64, 0f64, 0f64);
    let (mut w, mut pi) = (vec![], vec![]);
    let mut scratch = Scratch::default();
    for epoch in 0..EPOCHS {
        for (i, ((ids, special), tags)) in
            enc.ids.iter().zip(&enc.special).zip(&enc.tags).enumerate()
        {
            let ex = Example::new(ids, special).with_tags(tags);
            let (mut out_ids, mut labels) = (vec![0; ids.len()], vec![0; ids.len()]);
            let k = policy
                .mask_into(
                    &ex,
                    &MaskContext::new(17, epoch, i as u64, 0),
                    &mut scratch,
                    &mut out_ids,
                    &mut labels,
                )
                .unwrap();
            w.clear();
            w.extend(
                tags.iter()
                    .zip(special)
                    .map(|(&t, &s)| if s { 0.0 } else { weights.weight(t) }),
            );
            let eligible = special.iter().filter(|&&s| !s).count() as f64;
            inclusion_probabilities(&w, MASK_PROB * eligible, &mut pi);
            for p in 0..ids.len() {
                if special[p] {
                    assert_eq!(labels[p], IGNORE_INDEX);
                    continue;
                }
                let c = tags[p] as usize;
                tokens[c] += 1.0;
                expect[c] += pi[p];
                var[c] += pi[p] * (1.0 - pi[p]);
                hits[c] += f64::from(u8::from(labels[p] != IGNORE_INDEX));
            }
            total_masked += k as f64;
            total_budget += MASK_PROB * eligible;
            n_seq += 1.0;
        }
    }
    for c in 0..7 {
        let tol = 6.0 * var[c].sqrt();
        println!(
            "{:<6} share {:.3} weight {:.2} expected rate {:.4} realised {:.4} (+- {:.4})",
            brown::CLASSES[c],
            tokens[c] / tokens.iter().sum::<f64>(),
            WEIGHTS[c],
            expect[c] / tokens[c],
            hits[c] / tokens[c],
            tol / tokens[c]
        );
        assert!(
            (hits[c] - expect[c]).abs() <= tol,
            "{}: {} masked, expected {} +- {tol}",
            brown::CLASSES[c],
            hits[c],
            expect[c]
        );
    }
    let rate = |c: usize| hits[c] / tokens[c];
    assert!(
        rate(0) > 2.0 * rate(4),
        "NOUN {} vs FUNC {}",
        rate(0),
        rate(4)
    );
    assert!(rate(1) > rate(4) && rate(4) > rate(5));
    assert!(
        (total_masked - total_budget).abs() <= 6.0 * (0.25 * n_seq).sqrt(),
        "{total_masked} vs {total_budget}"
    );
    let overall = total_masked / tokens.iter().sum::<f64>();
    assert!((overall - MASK_PROB).abs() < 0.002, "{overall}");
}

#[test]
fn tag_weighted_masking_needs_weights_and_tags() {
    let cfg = MaskingConfig::new(VocabSpec::new(10, 3, vec![0, 1, 2, 3]))
        .with_selection(SelectionConfig::TagWeighted {});
    assert_eq!(
        cfg.build().unwrap_err(),
        MaskError::MissingResource {
            policy: "tag_weighted",
            resource: "tag_weights"
        }
    );
    let res = SelectorResources {
        tag_weights: Some(Arc::new(TagWeights::new(WEIGHTS.to_vec()).unwrap())),
        ..Default::default()
    };
    let policy = cfg.build_with(&res).unwrap();
    let ids = [1, 5, 6, 2];
    let special = [true, false, false, true];
    let ctx = MaskContext::default();
    assert_eq!(
        policy
            .mask(&Example::new(&ids, &special), &ctx)
            .unwrap_err(),
        MaskError::MissingInput {
            policy: "tag_weighted",
            input: "tags"
        }
    );
    let short = [0u16, 1];
    let e = policy
        .mask(&Example::new(&ids, &special).with_tags(&short), &ctx)
        .unwrap_err();
    assert_eq!(
        e,
        MaskError::LengthMismatch {
            field: "tags",
            expected: 4,
            got: 2
        }
    );
    let out_of_range = [0u16, 7, 0, 0];
    let e = policy
        .mask(&Example::new(&ids, &special).with_tags(&out_of_range), &ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tags") && e.contains("7 at position 1"), "{e}");
    policy
        .mask(&Example::new(&ids, &special).with_tags(&[6, 0, 4, 6]), &ctx)
        .unwrap();
}
