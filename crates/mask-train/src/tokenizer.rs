//! WordPiece tokenization with the HuggingFace `tokenizers` crate (BERT's normaliser and
//! pre-tokeniser, `[CLS] $A [SEP]` template): trained on the corpus when no `tokenizer.json` is
//! given, cached, and supplying the special-token masks and word ids that whole-word and span
//! masking need.

use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer, TokenizerBuilder, TruncationParams,
};

use crate::error::{invalid, Result, TrainError};

/// Special tokens, in id order for a freshly trained vocabulary.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

fn tok_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(e.to_string())
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
}

/// A BERT-style WordPiece tokenizer and its special ids.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// `[PAD]`.
    pub pad_id: u32,
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
            .finish()
    }
}

impl TextTokenizer {
    fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| TrainError::Tokenizer(format!("the vocabulary has no `{t}` token")))
        };
        Ok(Self {
            pad_id: id("[PAD]")?,
            mask_id: id("[MASK]")?,
            cls_id: id("[CLS]")?,
            sep_id: id("[SEP]")?,
            inner,
        })
    }

    /// Trains a WordPiece vocabulary of at most `vocab_size` tokens on `texts`.
    pub fn train<S: AsRef<str> + Send + Sync>(texts: &[S], vocab_size: usize) -> Result<Self> {
        if vocab_size < SPECIALS.len() + 26 {
            return Err(invalid(
                "vocab_size",
                vocab_size,
                "at least 31 (specials + letters)",
            ));
        }
        if texts.is_empty() {
            return Err(invalid(
                "corpus",
                "0 documents",
                "a non-empty corpus to train the tokenizer on",
            ));
        }
        let mut tokenizer = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(
            WordPiece::builder()
                .unk_token("[UNK]".into())
                .build()
                .map_err(tok_err)?
                .into(),
        )
        .with_normalizer(Some(BertNormalizer::default().into()))
        .with_pre_tokenizer(Some(BertPreTokenizer.into()))
        .with_post_processor(None)
        .with_decoder(Some(WordPieceDecoder::default().into()))
        .build()
        .map_err(tok_err)?;
        let mut trainer: TrainerWrapper = WordPieceTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(
                SPECIALS
                    .iter()
                    .map(|s| AddedToken::from(*s, true))
                    .collect(),
            )
            .build()
            .into();
        tokenizer
            .train(&mut trainer, texts.iter().map(|t| t.as_ref()))
            .map_err(tok_err)?;
        let cls = tokenizer
            .token_to_id("[CLS]")
            .ok_or_else(|| tok_err("no [CLS] after training"))?;
        let sep = tokenizer
            .token_to_id("[SEP]")
            .ok_or_else(|| tok_err("no [SEP] after training"))?;
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .map_err(tok_err)?
            .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
            .map_err(tok_err)?
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .map_err(tok_err)?;
        tokenizer.with_post_processor(Some(PostProcessorWrapper::from(template)));
        Self::from_tokenizer(Tokenizer::from(tokenizer))
    }

    /// Loads a `tokenizer.json` (ours or any BERT-style one with the five special tokens).
    pub fn load(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| TrainError::Tokenizer(format!("cannot load `{}`: {e}", path.display())))?;
        Self::from_tokenizer(inner)
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(false).map_err(tok_err)?;
        mask_model::checkpoint::write_atomic(path, json.as_bytes())?;
        Ok(())
    }

    /// Loads `cache` if it exists, else trains on `texts` and writes `cache`.
    pub fn load_or_train<S: AsRef<str> + Send + Sync>(
        cache: &Path,
        texts: &[S],
        vocab_size: usize,
    ) -> Result<Self> {
        if cache.exists() {
            return Self::load(cache);
        }
        let tok = Self::train(texts, vocab_size)?;
        if let Some(dir) = cache.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(crate::error::io_error(dir))?;
        }
        tok.save(cache)?;
        Ok(tok)
    }

    /// Vocabulary size (with specials).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of all special tokens.
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

    /// Tokenizes documents in parallel, truncated to `max_len` tokens (`[SEP]` kept).
    pub fn encode_batch<S: AsRef<str> + Send + Sync>(
        &self,
        texts: &[S],
        max_len: usize,
    ) -> Result<Vec<Encoded>> {
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
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encodings = tok.encode_batch(inputs, true).map_err(tok_err)?;
        Ok(encodings
            .into_iter()
            .map(|e| Encoded {
                ids: e.get_ids().to_vec(),
                special_mask: e
                    .get_special_tokens_mask()
                    .iter()
                    .map(|&m| m == 1)
                    .collect(),
                word_ids: e.get_word_ids().to_vec(),
            })
            .collect())
    }
}
