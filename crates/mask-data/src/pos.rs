//! Part-of-speech-tagged text: the vendored Brown Corpus subset (the first 4,000 sentences,
//! news genre; see `data/README.md`), its tags mapped to seven coarse classes, for
//! tag-weighted masking and as a token-classification (POS tagging) probe. Tags reach word-piece
//! level through [`crate::TextTokenizer::encode_tagged`].
//!
//! ## Brown tag -> coarse class
//! A tag is first normalised: lower case; a leading `fw-` (foreign word) makes it OTHER; of a
//! contraction tag (`ppss+md`) the first part counts; the suffixes `-tl` (title), `-hl`
//! (headline) and `-nc` (cited) are dropped. Then, by the normalised tag:
//! - NOUN: `nn*` (common), `np*` (proper), `nr*` (adverbial nouns: home, today, Friday);
//! - VERB: `vb*`, `be*`, `hv*`, `do*` (all forms of lexical verbs, be, have, do);
//! - ADJ: `jj*` (adjectives, comparatives, superlatives), `od` (ordinals);
//! - ADV: `rb*` (adverbs), `ql*` (qualifiers: very, too);
//! - FUNC: `at` (articles), `in` (prepositions), `cc`, `cs` (conjunctions), `pp*` (personal
//!   pronouns), `pn*` (nominal pronouns), `dt*` (determiners), `ap`, `abl`, `abn`, `abx`
//!   (pre-/post-quantifiers), `wdt`, `wp*`, `wql`, `wrb` (wh-words), `md` (modals), `to`, `rp`
//!   (particles), `ex` (existential there), `*` (not, n't);
//! - PUNCT: tags made only of punctuation characters (`.`, `,`, `:`, `(`, `)`, ```` `` ````,
//!   `''`, `--`, `'`);
//! - OTHER: everything else (`cd` numbers, `uh` interjections, foreign words, `nil`).

use std::collections::HashMap;

use crate::compress::{gunzip_to_string, DEFAULT_LIMIT};
use crate::error::{DataError, Result};

/// The vendored subset, gzipped (see `data/README.md`).
pub const BROWN_GZ: &[u8] = include_bytes!("../data/brown_tagged_subset.tsv.gz");

/// Coarse class names, by class id.
pub const CLASSES: [&str; 7] = ["NOUN", "VERB", "ADJ", "ADV", "FUNC", "PUNCT", "OTHER"];

/// Special ids of the word-level vocabulary.
pub const PAD: u32 = 0;
/// Sentence start.
pub const CLS: u32 = 1;
/// Sentence end.
pub const SEP: u32 = 2;
/// Mask token.
pub const MASK: u32 = 3;
/// First word id.
pub const FIRST_WORD: u32 = 4;

/// The coarse class id (index into [`CLASSES`]) of a Brown tag.
pub fn coarse_class(tag: &str) -> u16 {
    let tag = tag.to_ascii_lowercase();
    if tag.starts_with("fw-") || tag == "fw" {
        return 6;
    }
    if !tag.is_empty() && tag.chars().all(|c| !c.is_ascii_alphanumeric() && c != '*') {
        return 5;
    }
    let mut t = tag.split('+').next().unwrap_or("");
    for suffix in ["-tl", "-hl", "-nc"] {
        while let Some(s) = t.strip_suffix(suffix) {
            t = s;
        }
    }
    let t = t.trim_end_matches('$');
    let starts = |ps: &[&str]| ps.iter().any(|p| t.starts_with(p));
    if starts(&["nn", "np", "nr"]) {
        0
    } else if starts(&["vb", "be", "hv", "do"]) {
        1
    } else if starts(&["jj"]) || t == "od" {
        2
    } else if starts(&["rb", "ql"]) {
        3
    } else if starts(&["pp", "pn", "dt", "wp"])
        || [
            "at", "in", "cc", "cs", "ap", "abl", "abn", "abx", "wdt", "wql", "wrb", "md", "to",
            "rp", "ex", "*",
        ]
        .contains(&t)
    {
        4
    } else {
        6
    }
}

/// One tagged sentence.
#[derive(Debug, Clone)]
pub struct Sentence {
    /// Words as written.
    pub words: Vec<String>,
    /// Coarse class of each word.
    pub classes: Vec<u16>,
}

/// The vendored sentences (header row skipped), in file order.
pub fn sentences() -> Result<Vec<Sentence>> {
    let what = "embedded Brown subset";
    let text = gunzip_to_string(BROWN_GZ, what, DEFAULT_LIMIT)?;
    parse_tagged_tsv(&text, what)
}

/// Parses `genre<TAB>fileid<TAB>word/tag word/tag ...` rows with a header row; a word's tag is
/// what follows its last `/`.
pub fn parse_tagged_tsv(text: &str, what: &str) -> Result<Vec<Sentence>> {
    crate::text::strip_bom(text)
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != 3 {
                return Err(DataError::Malformed {
                    what: what.to_string(),
                    line: i + 1,
                    got: fields.len(),
                    expected: 3,
                });
            }
            let (mut words, mut classes) = (vec![], vec![]);
            for wt in fields[2].split(' ').filter(|s| !s.is_empty()) {
                let (w, t) = wt.rsplit_once('/').unwrap_or((wt, ""));
                words.push(w.to_string());
                classes.push(coarse_class(t));
            }
            Ok(Sentence { words, classes })
        })
        .collect()
}

/// A word-level encoding (one id per distinct lower-cased word; for demonstrations of
/// tag-weighted masking without a tokenizer): token `i + 1` of a row is word `i` (after `[CLS]`), with its class.
#[derive(Debug, Clone)]
pub struct WordLevel {
    /// Number of ids (specials + distinct lower-cased words).
    pub vocab_size: u32,
    /// `[CLS] words [SEP]` per sentence.
    pub ids: Vec<Vec<u32>>,
    /// `true` at `[CLS]` / `[SEP]`.
    pub special: Vec<Vec<bool>>,
    /// Coarse class per token (OTHER at the specials; they are never chosen).
    pub tags: Vec<Vec<u16>>,
}

/// Encodes sentences with a word vocabulary built from them (lower-cased words).
pub fn word_level(sents: &[Sentence]) -> WordLevel {
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let mut next = FIRST_WORD;
    let (mut ids, mut special, mut tags) = (vec![], vec![], vec![]);
    for s in sents {
        let mut row = vec![CLS];
        for w in &s.words {
            let id = *vocab.entry(w.to_lowercase()).or_insert_with(|| {
                next += 1;
                next - 1
            });
            row.push(id);
        }
        row.push(SEP);
        let mut sp = vec![false; row.len()];
        sp[0] = true;
        sp[row.len() - 1] = true;
        let mut tg = vec![6u16];
        tg.extend_from_slice(&s.classes);
        tg.push(6);
        ids.push(row);
        special.push(sp);
        tags.push(tg);
    }
    WordLevel {
        vocab_size: next,
        ids,
        special,
        tags,
    }
}
