//! The WordPiece tokenizer as the tasks use it: trained deterministically, cached under a name
//! bound to corpus and settings, tags carried to word pieces, and tag-weighted masking working
//! on collated batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mask_core::{
    BatchContext, BatchMasker, MaskingConfig, SelectionConfig, SelectorResources, TagWeights,
    VocabSpec, IGNORE_INDEX,
};
use mask_data::tokenizer::cache_file_name;
use mask_data::{collate, pos, text, TextTokenizer, TokenizerConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mask-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first Austen paragraphs with at least 8 words.
fn corpus(n: usize) -> Vec<String> {
    text::austen_paragraphs()
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .filter(|t| t.split_whitespace().count() >= 8)
        .take(n)
        .collect()
}

fn config(vocab_size: usize) -> TokenizerConfig {
    TokenizerConfig {
        vocab_size,
        ..TokenizerConfig::default()
    }
}

#[test]
fn tokenizer_trains_saves_and_reloads() {
    let texts = corpus(200);
    let tok = TextTokenizer::train(&texts, &config(300)).unwrap();
    assert_eq!(tok.vocab_size(), 300);
    assert_eq!(
        (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id),
        (0, 1, 2, 3, 4)
    );
    let enc = tok.encode_batch(&texts[..3], 16).unwrap();
    for e in &enc {
        assert!(e.ids.len() <= 16);
        assert_eq!((e.ids[0], *e.ids.last().unwrap()), (tok.cls_id, tok.sep_id));
        assert!(e.special_mask[0] && *e.special_mask.last().unwrap());
        assert!(!e.special_mask[1]);
        assert_eq!((e.word_ids[0], e.word_ids[1]), (None, Some(0)));
        assert!(e.tags.is_none());
    }
    let dir = temp_dir("tok");
    let (cached, path) = TextTokenizer::load_or_train(&dir, &texts, &config(300)).unwrap();
    assert!(path.exists());
    assert_eq!(
        path.file_name().unwrap(),
        cache_file_name(&texts, &config(300)).as_str()
    );
    let reloaded = TextTokenizer::load(&path).unwrap();
    assert_eq!(reloaded.digest(), cached.digest());
    assert_eq!(
        cached.encode_batch(&texts[..5], 32).unwrap(),
        reloaded.encode_batch(&texts[..5], 32).unwrap()
    );
    let err = TextTokenizer::train(&texts, &config(10)).unwrap_err();
    assert!(err.to_string().contains("vocab_size"), "{err}");
    let err = TextTokenizer::load(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot load `/nonexistent/tokenizer.json`"),
        "{err}"
    );
}

/// Regression (run-state issue, finding 2): three trainings of the HuggingFace WordPiece trainer
/// on the same text gave three different files (48 of 300 ids permuted), so the same seed gave
/// different masks in two fresh out_dirs. Ours gives byte-identical files.
#[test]
fn training_twice_gives_the_same_file() {
    let texts = corpus(400);
    let dir = temp_dir("twice");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    TextTokenizer::train(&texts, &config(600))
        .unwrap()
        .save(&a)
        .unwrap();
    TextTokenizer::train(&texts, &config(600))
        .unwrap()
        .save(&b)
        .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let reversed: Vec<String> = texts.iter().rev().cloned().collect();
    let c = TextTokenizer::train(&reversed, &config(600)).unwrap();
    assert_eq!(
        c.digest(),
        TextTokenizer::load(&a).unwrap().digest(),
        "word counts do not depend on document order"
    );
}

/// Regression (run-state issue, finding 2): the cache was `tokenizer-<vocab>.json`, so switching
/// the corpus in the same out_dir silently reused the old tokenizer. The name now depends on the
/// texts and every setting.
#[test]
fn the_cache_name_is_bound_to_corpus_and_settings() {
    let texts = corpus(50);
    let base = cache_file_name(&texts, &config(300));
    assert!(base.starts_with("tokenizer-") && base.ends_with(".json"));
    assert_eq!(base, cache_file_name(&texts, &config(300)));
    assert_ne!(base, cache_file_name(&texts[1..], &config(300)));
    assert_ne!(base, cache_file_name(&texts, &config(301)));
    let min2 = TokenizerConfig {
        min_frequency: 3,
        ..config(300)
    };
    assert_ne!(base, cache_file_name(&texts, &min2));
    // Document boundaries count: "ab" + "c" is not "a" + "bc".
    assert_ne!(
        cache_file_name(&["ab", "c"], &config(300)),
        cache_file_name(&["a", "bc"], &config(300))
    );
    let dir = temp_dir("switch");
    let (first, p1) = TextTokenizer::load_or_train(&dir, &texts, &config(300)).unwrap();
    let other = corpus(120)[60..].to_vec();
    let (second, p2) = TextTokenizer::load_or_train(&dir, &other, &config(300)).unwrap();
    assert_ne!(p1, p2);
    assert_ne!(first.digest(), second.digest());
}

/// Tags reach word pieces, and tag-weighted selection works on collated batches (the batch
/// path used to return `MissingInput` because `TokenBatch` carried no tags).
#[test]
fn pos_tags_reach_word_pieces_and_weight_masking_in_batches() {
    let sents: Vec<(Vec<String>, Vec<u16>)> = pos::sentences()
        .unwrap()
        .into_iter()
        .take(300)
        .map(|s| (s.words, s.classes))
        .collect();
    let texts: Vec<String> = sents.iter().map(|(w, _)| w.join(" ")).collect();
    let tok = TextTokenizer::train(&texts, &config(500)).unwrap();
    let other = pos::CLASSES.len() as u16 - 1;
    let docs = tok.encode_tagged(&sents, other, 64).unwrap();
    // Every piece carries its word's tag; specials carry OTHER.
    for (d, (words, tags)) in docs.iter().zip(&sents) {
        let t = d.tags.as_ref().unwrap();
        assert_eq!(t.len(), d.ids.len());
        for (k, w) in d.word_ids.iter().enumerate() {
            match w {
                Some(w) => assert_eq!(t[k], tags[*w as usize], "{words:?}"),
                None => assert_eq!(t[k], other),
            }
        }
    }
    // A word split into several pieces shares one tag across them.
    assert!(docs.iter().any(|d| d
        .word_ids
        .windows(2)
        .any(|w| w[0].is_some() && w[0] == w[1])));
    let err = tok
        .encode_tagged(&[(vec!["a".into()], vec![])], other, 8)
        .unwrap_err();
    assert!(err.to_string().contains("`tags`"), "{err}");

    // NOUN weighted 20x everything else: nouns must take far more than their uniform share.
    let mut weights = vec![1.0; pos::CLASSES.len()];
    weights[0] = 20.0;
    let res = SelectorResources {
        tag_weights: Some(Arc::new(TagWeights::new(weights).unwrap())),
        ..SelectorResources::default()
    };
    let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
    let policy = MaskingConfig::new(vocab)
        .with_selection(SelectionConfig::TagWeighted {})
        .build_with(&res)
        .unwrap();
    let mut masker = BatchMasker::new(policy);
    let (mut noun_masked, mut masked, mut nouns, mut tokens) = (0usize, 0usize, 0usize, 0usize);
    for step in 0..(docs.len() / 20) as u64 {
        let idx: Vec<usize> = (step as usize * 20..step as usize * 20 + 20).collect();
        let ctx = BatchContext {
            seed: 3,
            epoch: 0,
            step,
        };
        let b = collate(&mut masker, &docs, &idx, tok.pad_id, ctx).unwrap();
        for (r, &i) in idx.iter().enumerate() {
            let tags = docs[i].tags.as_ref().unwrap();
            for (k, &t) in tags.iter().enumerate() {
                if docs[i].special_mask[k] {
                    continue;
                }
                tokens += 1;
                nouns += usize::from(t == 0);
                if b.labels[r * b.seq_len + k] != IGNORE_INDEX {
                    masked += 1;
                    noun_masked += usize::from(t == 0);
                }
            }
        }
    }
    let noun_share = nouns as f64 / tokens as f64;
    let masked_share = noun_masked as f64 / masked as f64;
    // Uniform selection would mask nouns at their token share (0.44 of word pieces here);
    // weight 20 with capped inclusion probabilities gives ~0.93.
    assert!(
        masked_share > noun_share + 0.3,
        "nouns are {noun_share:.3} of tokens but {masked_share:.3} of masks"
    );
}
