//! Content-aware selection through the public API: IDF-weighted and PMI-span masking built from
//! corpus resources. Statistical tolerances are six standard deviations computed from the
//! sample sizes in the test; corpora are fixed by seeds, so the tests are deterministic.

use std::sync::Arc;

use mask_core::selection::weighted::inclusion_probabilities;
use mask_core::*;

const VOCAB: u32 = 2000;
const THE: u32 = 10;
const NEW_YORK_CITY: [u32; 3] = [50, 51, 52];

fn vocab() -> VocabSpec {
    VocabSpec::new(VOCAB, 4, vec![0, 1, 2, 3, 4])
}

/// `n` documents of 24 tokens: `[CLS] ... [SEP]` (ids 2 and 3). `the` at about a quarter of the
/// positions, the rest uniform over 1000 rare ids; every `trigram_every`-th document carries
/// "new york city" at a random position.
fn corpus(n: usize, trigram_every: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = MaskRng::for_example(seed, 0, 0, 7);
    (0..n)
        .map(|d| {
            let mut doc: Vec<u32> = (0..22)
                .map(|_| {
                    if rng.below(4) == 0 {
                        THE
                    } else {
                        100 + rng.below(1000) as u32
                    }
                })
                .collect();
            if d % trigram_every == 0 {
                let p = rng.below(20) as usize;
                doc[p..p + 3].copy_from_slice(&NEW_YORK_CITY);
            }
            doc.insert(0, 2);
            doc.push(3);
            doc
        })
        .collect()
}

/// Inclusion probabilities from their definition, independently of the library's
/// water-filling: `pi_i = min(1, c w_i)` with `c` found by bisection so that `sum pi = budget`
/// (at most the number of positive weights).
fn reference_inclusion(weights: &[f64], budget: f64) -> Vec<f64> {
    let positive = weights.iter().filter(|&&w| w > 0.0).count() as f64;
    let budget = budget.min(positive);
    let total = |c: f64| weights.iter().map(|&w| (c * w).min(1.0)).sum::<f64>();
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while total(hi) < budget {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if total(mid) < budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    weights.iter().map(|&w| (hi * w).min(1.0)).collect()
}

/// The library's water-filling (which the tag-weighted test on Brown in mask-data uses as its
/// expectation) against the definition above, on random weights with and without capping.
#[test]
fn inclusion_probabilities_match_their_definition() {
    let mut rng = MaskRng::for_example(3, 0, 0, 9);
    let mut pi = vec![];
    for case in 0..500 {
        let n = 1 + rng.below(60) as usize;
        // Heavy-tailed weights (some capped at 1), some zeros (special positions).
        let weights: Vec<f64> = (0..n)
            .map(|_| match rng.below(5) {
                0 => 0.0,
                _ => (8.0 * rng.next_f64()).exp(),
            })
            .collect();
        let budget = rng.next_f64() * n as f64;
        inclusion_probabilities(&weights, budget, &mut pi);
        let want = reference_inclusion(&weights, budget);
        for (i, (&got, &w)) in pi.iter().zip(&want).enumerate() {
            assert!(
                (got - w).abs() < 1e-9,
                "case {case}, position {i}: {got} vs {w}"
            );
        }
    }
}

fn special_of(doc: &[u32]) -> Vec<bool> {
    doc.iter().map(|&id| id <= 4).collect()
}

#[test]
fn idf_masks_frequent_tokens_less_in_proportion_to_their_weights() {
    let docs = corpus(400, 1_000_000, 1);
    let stats = Arc::new(TokenStats::from_docs(VOCAB, &docs).unwrap());
    assert!(stats.idf(THE) < stats.idf(150));
    let res = SelectorResources {
        token_stats: Some(stats.clone()),
        ..Default::default()
    };
    let mask_prob = 0.15;
    let policy = MaskingConfig::new(vocab())
        .with_selection(SelectionConfig::Idf { exponent: 1.0 })
        .build_with(&res)
        .unwrap();
    // Per class (the / rare): realised masks, expected masks (sum of pi), variance, tokens.
    let (mut hits, mut expect, mut var, mut tokens) = ([0f64; 2], [0f64; 2], [0f64; 2], [0f64; 2]);
    let (mut total_masked, mut total_budget, mut n_seq) = (0f64, 0f64, 0f64);
    for epoch in 0..10 {
        for (i, doc) in docs.iter().enumerate() {
            let special = special_of(doc);
            let out = policy
                .mask(
                    &Example::new(doc, &special),
                    &MaskContext::new(5, epoch, i as u64, 0),
                )
                .unwrap();
            let weights: Vec<f64> = doc
                .iter()
                .zip(&special)
                .map(|(&id, &s)| if s { 0.0 } else { stats.idf(id) })
                .collect();
            let eligible = special.iter().filter(|&&s| !s).count() as f64;
            let pi = reference_inclusion(&weights, mask_prob * eligible);
            // (the library's own `inclusion_probabilities` is checked against this definition
            // in `inclusion_probabilities_match_their_definition`)
            for (p, &id) in doc.iter().enumerate() {
                if special[p] {
                    assert_eq!(out.labels[p], IGNORE_INDEX);
                    continue;
                }
                let c = usize::from(id != THE);
                tokens[c] += 1.0;
                expect[c] += pi[p];
                var[c] += pi[p] * (1.0 - pi[p]);
                hits[c] += f64::from(u8::from(out.labels[p] != IGNORE_INDEX));
            }
            total_masked += out.masked_positions().len() as f64;
            total_budget += mask_prob * eligible;
            n_seq += 1.0;
        }
    }
    for c in 0..2 {
        assert!(
            (hits[c] - expect[c]).abs() <= 6.0 * var[c].sqrt(),
            "class {c}: {} masked, expected {} +- {}",
            hits[c],
            expect[c],
            6.0 * var[c].sqrt()
        );
    }
    // Rates in the ratio of the IDF weights (no capping at this rate).
    let (rate_the, rate_rare) = (hits[0] / tokens[0], hits[1] / tokens[1]);
    assert!(rate_the < 0.5 * rate_rare, "{rate_the} vs {rate_rare}");
    // Overall rate: each sequence masks floor or ceil of its budget, expectation exact.
    assert!(
        (total_masked - total_budget).abs() <= 6.0 * (0.25 * n_seq).sqrt(),
        "{total_masked} vs {total_budget}"
    );
}

#[test]
fn idf_needs_statistics_of_the_same_vocabulary() {
    let cfg = MaskingConfig::new(vocab()).with_selection(SelectionConfig::Idf { exponent: 1.0 });
    assert_eq!(
        cfg.build().unwrap_err(),
        MaskError::MissingResource {
            policy: "idf",
            resource: "token_stats"
        }
    );
    let small = SelectorResources {
        token_stats: Some(Arc::new(TokenStats::from_docs(10, [[1u32, 2]]).unwrap())),
        ..Default::default()
    };
    let e = cfg.build_with(&small).unwrap_err().to_string();
    assert!(
        e.contains("token_stats.vocab_size") && e.contains("10"),
        "{e}"
    );
}

fn pmi_table(docs: &[Vec<u32>]) -> PmiTable {
    PmiTable::build(
        docs,
        &PmiTableConfig {
            special_ids: vec![0, 1, 2, 3, 4],
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn pmi_table_ranks_a_fixed_expression_first() {
    let docs = corpus(2000, 10, 2);
    let table = pmi_table(&docs);
    let top: Vec<Vec<u32>> = table.iter().take(3).map(|e| e.ngram.clone()).collect();
    for g in [&NEW_YORK_CITY[..], &NEW_YORK_CITY[..2], &NEW_YORK_CITY[1..]] {
        assert!(top.iter().any(|t| t == g), "{g:?} not in top 3: {top:?}");
    }
    assert!(table
        .iter()
        .all(|e| e.count >= 5 && e.ngram.iter().all(|&id| id > 4)));
}

#[test]
fn pmi_span_masks_the_expression_whole_at_the_nominal_rate() {
    let docs = corpus(2000, 10, 2);
    let res = SelectorResources {
        pmi: Some(Arc::new(pmi_table(&docs))),
        ..Default::default()
    };
    let mask_prob = 0.15;
    let policy = MaskingConfig::new(vocab())
        .with_selection(SelectionConfig::PmiSpan { max_ngram: 4 })
        .build_with(&res)
        .unwrap();
    let (mut whole, mut total_masked, mut total_budget, mut n_seq) = (0usize, 0f64, 0f64, 0f64);
    for epoch in 0..3 {
        for (i, doc) in docs.iter().enumerate() {
            let special = special_of(doc);
            let out = policy
                .mask(
                    &Example::new(doc, &special),
                    &MaskContext::new(9, epoch, i as u64, 0),
                )
                .unwrap();
            let chosen: Vec<bool> = out.labels.iter().map(|&l| l != IGNORE_INDEX).collect();
            if let Some(p) = doc.windows(3).position(|w| w == NEW_YORK_CITY) {
                let c = &chosen[p..p + 3];
                assert!(
                    c.iter().all(|&x| x) || c.iter().all(|&x| !x),
                    "doc {i} epoch {epoch}: expression split {c:?}"
                );
                whole += usize::from(c[0]);
            }
            assert!(chosen.iter().zip(&special).all(|(&c, &s)| !(c && s)));
            let eligible = special.iter().filter(|&&s| !s).count() as f64;
            total_masked += chosen.iter().filter(|&&c| c).count() as f64;
            total_budget += mask_prob * eligible;
            n_seq += 1.0;
        }
    }
    // 600 occurrences; chosen as a unit with probability about 0.15 each.
    assert!(whole > 30, "expression masked only {whole} times");
    // Per sequence the count deviates from its expectation by at most 3 tokens (the longest
    // unit), so the sd of the total is at most 3 * sqrt(n_seq).
    assert!(
        (total_masked - total_budget).abs() <= 6.0 * 3.0 * n_seq.sqrt(),
        "{total_masked} vs {total_budget}"
    );
    let rate = total_masked / (total_budget / mask_prob);
    assert!((rate - mask_prob).abs() < 0.005, "{rate}");
}

#[test]
fn pmi_table_files_round_trip_and_errors_name_the_path() {
    let docs = corpus(500, 5, 3);
    let table = pmi_table(&docs);
    assert!(!table.is_empty());
    let dir = std::env::temp_dir().join(format!("dynmask-pmi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("table.json");
    table.save(&path).unwrap();
    let back = PmiTable::load(&path).unwrap();
    assert_eq!(back.len(), table.len());
    for e in table.iter() {
        assert!(back.contains(&e.ngram));
        assert!((back.pmi(&e.ngram).unwrap() - e.pmi).abs() < 1e-12);
    }
    assert_eq!(back.config(), table.config());

    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"format\": \"dynmask-pmi-table\", \"version\": 1}").unwrap();
    match PmiTable::load(&bad).unwrap_err() {
        MaskError::File { path, reason } => {
            assert!(path.contains("bad.json"), "{path}");
            assert!(
                reason.contains("config") || reason.contains("missing"),
                "{reason}"
            );
        }
        e => panic!("unexpected {e}"),
    }
    // Writes `text` as the table file and returns why loading it was refused.
    let refused = |text: &str| -> String {
        std::fs::write(&bad, text).unwrap();
        PmiTable::load(&bad).unwrap_err().to_string()
    };
    let e = refused(
        r#"{"format": "dynmask-pmi-table", "version": 1, "config": {}, "entries": [{"ngram": [5], "count": 9, "pmi": 1.0}]}"#,
    );
    assert!(e.contains("bad.json") && e.contains("[5]"), "{e}");
    // An n-gram longer than the table's max_ngram (4 by default) is refused too, though its
    // PMI is finite.
    let e = refused(
        r#"{"format": "dynmask-pmi-table", "version": 1, "config": {}, "entries": [{"ngram": [5, 6, 7, 8, 9], "count": 9, "pmi": 1.0}]}"#,
    );
    assert!(e.contains("[5, 6, 7, 8, 9]") && e.contains("2..=4"), "{e}");
    // Another version or another format is refused, each on its own (mutation testing found
    // the two checks interchangeable with `&&`).
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (field, value) in [
        ("version", serde_json::json!(2)),
        ("format", serde_json::json!("x")),
    ] {
        let mut other = saved.clone();
        other[field] = value;
        let e = refused(&other.to_string());
        assert!(
            e.contains("bad.json") && e.contains("expected"),
            "{field}: {e}"
        );
    }
    let missing = dir.join("missing.json");
    let e = PmiTable::load(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
