//! BERT-style WordPiece tokenization: our deterministic trainer ([`trainer`]) builds the
//! vocabulary; the HuggingFace `tokenizers` crate applies it (BERT's normaliser and
//! pre-tokeniser, `[CLS] $A [SEP]` template, truncation that keeps `[SEP]`), and supplies the
//! special-token masks and word ids that whole-word and span masking need.
//!
//! A tokenizer is identified by its [`digest`](TextTokenizer::digest), the SHA-256 of its
//! serialised form. A trained tokenizer is cached under a name derived from the corpus and the
//! settings ([`cache_file_name`]), so another corpus or vocabulary size can never pick up a stale
//! file, and checkpoints record the digest so that a model is never evaluated with other ids.

pub mod trainer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, EncodeInput, InputSequence, ModelWrapper, NormalizerWrapper,
    PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerBuilder, TruncationParams,
};

use crate::error::{invalid, io_error, DataError, Result};
pub use trainer::{count_words, train_wordpiece, TrainerError, WordPieceTrainerConfig};

/// Special tokens, in id order for a freshly trained vocabulary.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Version of the training algorithm, part of the cache name: bump it whenever the trainer's
/// output for the same input changes.
pub const TRAINER_VERSION: u32 = 1;

fn tok_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer(e.to_string())
}

impl From<TrainerError> for DataError {
    fn from(e: TrainerError) -> Self {
        DataError::Tokenizer(e.to_string())
    }
}

/// Settings of a trained tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// Largest vocabulary (specials included). Default: 4096
    pub vocab_size: usize,
    /// A pair must occur at least this often to be merged. Default: 2
    pub min_frequency: u64,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            vocab_size: 4096,
            min_frequency: 2,
        }
    }
}

/// One tokenized document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// Token ids, `[CLS] ... [SEP]`.
    pub ids: Vec<u32>,
    /// `true` at special tokens.
    pub special_mask: Vec<bool>,
    /// Word index of each token (`None` for specials).
    pub word_ids: Vec<Option<u32>>,
    /// A tag per token (e.g. the part of speech of its word), when the input was tagged.
    pub tags: Option<Vec<u16>>,
}

/// A BERT-style WordPiece tokenizer and its special ids.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    digest: String,
    /// `[PAD]`.
    pub pad_id: u32,
    /// `[UNK]`.
    pub unk_id: u32,
    /// `[MASK]`.
    pub mask_id: u32,
    /// `[CLS]`.
    pub cls_id: u32,
    /// `[SEP]`.
    pub sep_id: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("digest", &self.digest)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file name of a tokenizer trained on `texts` with `config`:
/// `tokenizer-<16 hex digits>.json`, a digest of the texts (in order), the settings and
/// [`TRAINER_VERSION`].
pub fn cache_file_name<S: AsRef<str>>(texts: &[S], config: &TokenizerConfig) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "dynmask-wordpiece v{TRAINER_VERSION} vocab {} min_frequency {} docs {}\n",
        config.vocab_size,
        config.min_frequency,
        texts.len()
    ));
    for t in texts {
        let t = t.as_ref();
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    format!("tokenizer-{}.json", &hex(&h.finalize())[..16])
}

impl TextTokenizer {
    fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| tok_err(format!("the vocabulary has no `{t}` token")))
        };
        let json = inner.to_string(false).map_err(tok_err)?;
        Ok(Self {
            pad_id: id("[PAD]")?,
            unk_id: id("[UNK]")?,
            mask_id: id("[MASK]")?,
            cls_id: id("[CLS]")?,
            sep_id: id("[SEP]")?,
            digest: hex(&Sha256::digest(json.as_bytes())),
            inner,
        })
    }

    /// A BERT pipeline around `vocab` (tokens in id order; it must hold the five [`SPECIALS`]).
    pub fn from_vocab(vocab: &[String]) -> Result<Self> {
        let map: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if map.len() != vocab.len() {
            return Err(tok_err("the vocabulary has duplicate tokens"));
        }
        let id = |t: &str| {
            map.get(t)
                .copied()
                .ok_or_else(|| tok_err(format!("the vocabulary has no `{t}` token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let model = WordPiece::builder()
            .vocab(map.into_iter().collect::<tokenizers::models::bpe::Vocab>())
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(tok_err)?;
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .map_err(tok_err)?
            .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
            .map_err(tok_err)?
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .map_err(tok_err)?;
        let mut tokenizer = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(model.into())
        .with_normalizer(Some(BertNormalizer::default().into()))
        .with_pre_tokenizer(Some(BertPreTokenizer.into()))
        .with_post_processor(Some(template.into()))
        .with_decoder(Some(WordPieceDecoder::default().into()))
        .build()
        .map_err(tok_err)?;
        tokenizer.add_special_tokens(
            &SPECIALS
                .iter()
                .filter(|s| vocab.iter().any(|t| t == *s))
                .map(|s| AddedToken::from(*s, true))
                .collect::<Vec<_>>(),
        );
        Self::from_tokenizer(Tokenizer::from(tokenizer))
    }

    /// Trains a WordPiece vocabulary on `texts` with the deterministic [`trainer`]: the same
    /// texts and settings give the same tokenizer (and digest) on every machine and run.
    pub fn train<S: AsRef<str>>(texts: &[S], config: &TokenizerConfig) -> Result<Self> {
        if texts.is_empty() {
            return Err(invalid(
                "corpus",
                "0 documents",
                "a non-empty corpus to train the tokenizer on",
            ));
        }
        let words = count_words(texts)?;
        let cfg = WordPieceTrainerConfig {
            vocab_size: config.vocab_size,
            min_frequency: config.min_frequency,
            ..WordPieceTrainerConfig::default()
        };
        let vocab = train_wordpiece(&words, &cfg)?;
        Self::from_vocab(&vocab)
    }

    /// Loads a `tokenizer.json` (ours or any BERT-style one with `[PAD]`, `[UNK]`, `[CLS]`,
    /// `[SEP]` and `[MASK]`).
    pub fn load(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| tok_err(format!("cannot load `{}`: {e}", path.display())))?;
        Self::from_tokenizer(inner)
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(false).map_err(tok_err)?;
        mask_core::io::write_atomic(path, json.as_bytes()).map_err(io_error(path))
    }

    /// Loads `dir/<cache_file_name(texts, config)>` if it exists, else trains on `texts` and
    /// writes it there. Returns the tokenizer and its path.
    pub fn load_or_train<S: AsRef<str>>(
        dir: &Path,
        texts: &[S],
        config: &TokenizerConfig,
    ) -> Result<(Self, PathBuf)> {
        let path = dir.join(cache_file_name(texts, config));
        if path.exists() {
            return Ok((Self::load(&path)?, path));
        }
        let tok = Self::train(texts, config)?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        tok.save(&path)?;
        Ok((tok, path))
    }

    /// SHA-256 (hex) of the serialised tokenizer: equal digests mean equal token ids.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Vocabulary size (with specials).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of all special tokens present.
    pub fn special_ids(&self) -> Vec<u32> {
        SPECIALS
            .iter()
            .filter_map(|s| self.inner.token_to_id(s))
            .collect()
    }

    /// The token for an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn truncating(&self, max_len: usize) -> Result<Tokenizer> {
        if max_len < 3 {
            return Err(invalid(
                "max_len",
                max_len,
                "at least 3 ([CLS], one token, [SEP])",
            ));
        }
        let mut tok = self.inner.clone();
        tok.with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(tok_err)?;
        Ok(tok)
    }

    /// Tokenizes documents in parallel, truncated to `max_len` tokens (`[SEP]` kept).
    pub fn encode_batch<S: AsRef<str> + Send + Sync>(
        &self,
        texts: &[S],
        max_len: usize,
    ) -> Result<Vec<Encoded>> {
        let tok = self.truncating(max_len)?;
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encodings = tok.encode_batch(inputs, true).map_err(tok_err)?;
        Ok(encodings.iter().map(encoded).collect())
    }

    /// Tokenizes pre-split words with one tag per word, carrying each word's tag to all of its
    /// word pieces (specials get `special_tag`); truncated to `max_len` tokens.
    pub fn encode_tagged(
        &self,
        sentences: &[(Vec<String>, Vec<u16>)],
        special_tag: u16,
        max_len: usize,
    ) -> Result<Vec<Encoded>> {
        let tok = self.truncating(max_len)?;
        if let Some((i, (w, t))) = sentences
            .iter()
            .enumerate()
            .find(|(_, (w, t))| w.len() != t.len())
        {
            return Err(invalid(
                "tags",
                format!("{} tags for {} words in sentence {i}", t.len(), w.len()),
                "one tag per word",
            ));
        }
        let inputs: Vec<EncodeInput> = sentences
            .iter()
            .map(|(words, _)| {
                EncodeInput::Single(InputSequence::PreTokenizedOwned(words.as_slice().into()))
            })
            .collect();
        let encodings = tok.encode_batch(inputs, true).map_err(tok_err)?;
        Ok(encodings
            .iter()
            .zip(sentences)
            .map(|(e, (_, tags))| {
                let mut enc = encoded(e);
                enc.tags = Some(
                    enc.word_ids
                        .iter()
                        .map(|w| w.map_or(special_tag, |w| tags[w as usize]))
                        .collect(),
                );
                enc
            })
            .collect())
    }
}

fn encoded(e: &tokenizers::Encoding) -> Encoded {
    Encoded {
        ids: e.get_ids().to_vec(),
        special_mask: e
            .get_special_tokens_mask()
            .iter()
            .map(|&m| m == 1)
            .collect(),
        word_ids: e.get_word_ids().to_vec(),
        tags: None,
    }
}
