//! External resources some selectors need: corpus statistics, an n-gram PMI table, tag
//! weights. Built once (from the training corpus or a file) and shared by `Arc`.

use std::sync::Arc;

use super::pmi_span::PmiTable;
use super::stats::TokenStats;
use super::tag_weighted::TagWeights;

/// Resources handed to [`super::SelectionConfig::build_with`]; each selector takes what it
/// needs and refuses to build without it ([`crate::MaskError::MissingResource`]).
#[derive(Debug, Clone, Default)]
pub struct SelectorResources {
    /// Corpus token statistics (IDF-weighted selection; the learned scorer may use them as features).
    pub token_stats: Option<Arc<TokenStats>>,
    /// N-gram PMI table (PMI-span selection).
    pub pmi: Option<Arc<PmiTable>>,
    /// Weight per POS tag (tag-weighted selection).
    pub tag_weights: Option<Arc<TagWeights>>,
}
