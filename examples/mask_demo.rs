//! Static versus dynamic masking, seen on real text.
//!
//! Reads the embedded Jane Austen corpus, tokenizes it with a small word-piece stand-in (the
//! real `tokenizers` pipeline comes with `mask-train`), and prints the same sentence masked at
//! epochs 0, 1, 2 under static (k = 1), static (k = 2) and dynamic masking, then whole-word and
//! span masking. `[MASK]` is the mask token, `~w~` a random replacement, `{w}` a chosen token
//! kept as is (it still carries a label).
//!
//! Run: `cargo run --release --example mask_demo`

use std::collections::HashMap;

use mask_core::{
    Example, MaskContext, MaskPolicy, MaskingConfig, RateSchedule, Regime, SelectionConfig,
    SpanAnchor, VocabSpec, IGNORE_INDEX,
};

const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const CLS: u32 = 2;
const SEP: u32 = 3;
const MASK: u32 = 4;

/// A tiny word-piece stand-in: frequent words are one token; rarer words are cut into a first
/// piece of up to 4 characters and `##` continuation pieces of up to 3.
struct StandInTokenizer {
    vocab: Vec<String>,
    ids: HashMap<String, u32>,
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| c.is_whitespace())
        .flat_map(|w| {
            // Split off punctuation as separate words.
            let mut out = vec![];
            let mut cur = String::new();
            for c in w.chars() {
                if c.is_alphanumeric() || c == '\'' {
                    cur.push(c.to_ascii_lowercase());
                } else {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                    out.push(c.to_string());
                }
            }
            if !cur.is_empty() {
                out.push(cur);
            }
            out
        })
        .filter(|w| !w.is_empty())
}

fn pieces(word: &str, whole: bool) -> Vec<String> {
    if whole {
        return vec![word.to_string()];
    }
    let chars: Vec<char> = word.chars().collect();
    let mut out = vec![chars.iter().take(4).collect::<String>()];
    for chunk in chars.get(4..).unwrap_or(&[]).chunks(3) {
        out.push(format!("##{}", chunk.iter().collect::<String>()));
    }
    out
}

impl StandInTokenizer {
    fn train(corpus: &[String], whole_words: usize) -> Self {
        let mut freq: HashMap<String, usize> = HashMap::new();
        for text in corpus {
            for w in words(text) {
                *freq.entry(w).or_default() += 1;
            }
        }
        let mut by_freq: Vec<(String, usize)> = freq.into_iter().collect();
        by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        let mut ids = HashMap::new();
        for (i, s) in vocab.iter().enumerate() {
            ids.insert(s.clone(), i as u32);
        }
        let mut add = |tok: String, vocab: &mut Vec<String>| {
            if !ids.contains_key(&tok) {
                ids.insert(tok.clone(), vocab.len() as u32);
                vocab.push(tok);
            }
        };
        for (i, (w, _)) in by_freq.iter().enumerate() {
            for p in pieces(w, i < whole_words) {
                add(p, &mut vocab);
            }
        }
        Self { vocab, ids }
    }

    /// `[CLS] pieces [SEP]`, with word ids (None for specials).
    fn encode(
        &self,
        text: &str,
        whole_words: &HashMap<String, ()>,
    ) -> (Vec<u32>, Vec<Option<u32>>) {
        let mut ids = vec![CLS];
        let mut word_ids = vec![None];
        for (w_idx, w) in words(text).enumerate() {
            for p in pieces(&w, whole_words.contains_key(&w)) {
                ids.push(*self.ids.get(&p).unwrap_or(&1));
                word_ids.push(Some(w_idx as u32));
            }
        }
        ids.push(SEP);
        word_ids.push(None);
        (ids, word_ids)
    }
}

fn render(tok: &StandInTokenizer, original: &[u32], ids: &[u32], labels: &[i32]) -> String {
    let mut s = String::new();
    for i in 1..ids.len() - 1 {
        let t = &tok.vocab[ids[i] as usize];
        let piece = if labels[i] == IGNORE_INDEX {
            t.clone()
        } else if ids[i] == MASK {
            "[MASK]".into()
        } else if ids[i] == original[i] {
            format!("{{{t}}}")
        } else {
            format!("~{t}~")
        };
        if let Some(rest) = piece.strip_prefix("##") {
            s.push_str(rest);
        } else {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&piece);
        }
    }
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus: Vec<String> = mask_data::text::austen_paragraphs()?
        .into_iter()
        .map(|p| p.text)
        .collect();
    let n_whole = 3000;
    let tok = StandInTokenizer::train(&corpus, n_whole);
    // Which words the stand-in keeps whole (the n_whole most frequent).
    let mut freq: HashMap<String, usize> = HashMap::new();
    for text in &corpus {
        for w in words(text) {
            *freq.entry(w).or_default() += 1;
        }
    }
    let mut by_freq: Vec<(String, usize)> = freq.into_iter().collect();
    by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let whole: HashMap<String, ()> = by_freq
        .into_iter()
        .take(n_whole)
        .map(|(w, _)| (w, ()))
        .collect();

    let index = corpus
        .iter()
        .position(|p| p.starts_with("It is a truth universally acknowledged"))
        .unwrap_or(0);
    let (ids, word_ids) = tok.encode(&corpus[index], &whole);
    let special: Vec<bool> = ids.iter().map(|&i| i < SPECIALS.len() as u32).collect();
    let ex = Example::new(&ids, &special).with_word_ids(&word_ids);
    println!(
        "Corpus: {} Austen paragraphs, stand-in vocabulary of {} pieces.",
        corpus.len(),
        tok.vocab.len()
    );
    println!(
        "Example {index}: {}\n",
        render(&tok, &ids, &ids, &vec![IGNORE_INDEX; ids.len()])
    );

    let vocab = VocabSpec::new(tok.vocab.len() as u32, MASK, vec![0, 1, 2, 3]);
    let seed = 2026;
    let show = |title: &str, cfg: MaskingConfig| -> Result<(), Box<dyn std::error::Error>> {
        let policy = cfg.build()?;
        println!("{title}");
        for epoch in 0..3 {
            let out = policy.mask(&ex, &MaskContext::new(seed, epoch, index as u64, 0))?;
            println!(
                "  epoch {epoch}: {}",
                render(&tok, &ids, &out.input_ids, &out.labels)
            );
        }
        println!();
        Ok(())
    };
    let base = MaskingConfig::new(vocab).with_rate(RateSchedule::constant(0.15));
    show(
        "Static, k = 1 (BERT without duplication): the same mask every epoch",
        base.clone().with_regime(Regime::fully_static()),
    )?;
    show(
        "Static, k = 2 (BERT's dupe_factor = 2): epochs 0 and 2 share a mask",
        base.clone().with_regime(Regime::Static { dupe_factor: 2 }),
    )?;
    show(
        "Dynamic (RoBERTa): a fresh mask every epoch",
        base.clone().with_regime(Regime::Dynamic {}),
    )?;
    show(
        "Dynamic whole-word masking: all pieces of a chosen word",
        base.clone().with_selection(SelectionConfig::WholeWord {}),
    )?;
    show(
        "Dynamic span masking (SpanBERT, word-anchored, 30%)",
        base.with_rate(RateSchedule::constant(0.3))
            .with_selection(SelectionConfig::Span {
                geometric_p: 0.2,
                min_span: 1,
                max_span: 10,
                anchor: SpanAnchor::Word,
            }),
    )?;
    Ok(())
}
