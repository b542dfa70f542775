//! `and` / `or` / `not` of masks (FlexAttention's `and_masks` / `or_masks`); combinators are
//! masks too. Tiles are classified from the children when that is exact (an `and` with an empty
//! child is empty; with all children full, full; with exactly one partial child and the rest full,
//! partial) and by scanning the tile otherwise (two partial children can cancel out).

use std::ops::Range;

use super::{scan_tile, AttnMask, TileKind};
use crate::error::{AttnError, Result};

fn common_batch(children: &[Box<dyn AttnMask>]) -> Result<Option<usize>> {
    let mut batch = None;
    for c in children {
        if let Some(n) = c.batch_size() {
            match batch {
                Some(m) if m != n => {
                    return Err(AttnError::Shape {
                        what: format!("batch size of `{}` in a combined mask", c.name()),
                        expected: m,
                        got: n,
                    })
                }
                _ => batch = Some(n),
            }
        }
    }
    Ok(batch)
}

fn common_seq(children: &[Box<dyn AttnMask>]) -> Result<Option<usize>> {
    let mut seq = None;
    for c in children {
        if let Some(n) = c.seq_len() {
            match seq {
                Some(m) if m != n => {
                    return Err(AttnError::Shape {
                        what: format!("sequence length of `{}` in a combined mask", c.name()),
                        expected: m,
                        got: n,
                    })
                }
                _ => seq = Some(n),
            }
        }
    }
    Ok(seq)
}

/// Allowed iff every child allows.
#[derive(Debug)]
pub struct And {
    children: Vec<Box<dyn AttnMask>>,
    batch: Option<usize>,
    seq: Option<usize>,
}

impl And {
    /// The conjunction of `children` (all must agree on batch size and sequence length).
    pub fn new(children: Vec<Box<dyn AttnMask>>) -> Result<Self> {
        Ok(Self {
            batch: common_batch(&children)?,
            seq: common_seq(&children)?,
            children,
        })
    }
}

impl AttnMask for And {
    fn name(&self) -> &'static str {
        "and"
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        self.children.iter().all(|c| c.allows(b, h, q, k))
    }
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        let mut partial = 0;
        for c in &self.children {
            match c.classify(b, h, q.clone(), k.clone()) {
                TileKind::Empty => return TileKind::Empty,
                TileKind::Partial => partial += 1,
                TileKind::Full => {}
            }
        }
        match partial {
            0 => TileKind::Full,
            1 => TileKind::Partial,
            _ => scan_tile(self, b, h, q, k),
        }
    }
    fn head_dependent(&self) -> bool {
        self.children.iter().any(|c| c.head_dependent())
    }
    fn batch_size(&self) -> Option<usize> {
        self.batch
    }
    fn seq_len(&self) -> Option<usize> {
        self.seq
    }
}

/// Allowed iff some child allows.
#[derive(Debug)]
pub struct Or {
    children: Vec<Box<dyn AttnMask>>,
    batch: Option<usize>,
    seq: Option<usize>,
}

impl Or {
    /// The disjunction of `children` (all must agree on batch size and sequence length).
    pub fn new(children: Vec<Box<dyn AttnMask>>) -> Result<Self> {
        Ok(Self {
            batch: common_batch(&children)?,
            seq: common_seq(&children)?,
            children,
        })
    }
}

impl AttnMask for Or {
    fn name(&self) -> &'static str {
        "or"
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        self.children.iter().any(|c| c.allows(b, h, q, k))
    }
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        let mut partial = 0;
        for c in &self.children {
            match c.classify(b, h, q.clone(), k.clone()) {
                TileKind::Full => return TileKind::Full,
                TileKind::Partial => partial += 1,
                TileKind::Empty => {}
            }
        }
        match partial {
            0 => TileKind::Empty,
            1 => TileKind::Partial,
            _ => scan_tile(self, b, h, q, k),
        }
    }
    fn head_dependent(&self) -> bool {
        self.children.iter().any(|c| c.head_dependent())
    }
    fn batch_size(&self) -> Option<usize> {
        self.batch
    }
    fn seq_len(&self) -> Option<usize> {
        self.seq
    }
}

/// Allowed iff the child does not allow.
#[derive(Debug)]
pub struct Not(pub Box<dyn AttnMask>);

impl AttnMask for Not {
    fn name(&self) -> &'static str {
        "not"
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        !self.0.allows(b, h, q, k)
    }
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        match self.0.classify(b, h, q, k) {
            TileKind::Full => TileKind::Empty,
            TileKind::Empty => TileKind::Full,
            TileKind::Partial => TileKind::Partial,
        }
    }
    fn head_dependent(&self) -> bool {
        self.0.head_dependent()
    }
    fn batch_size(&self) -> Option<usize> {
        self.0.batch_size()
    }
    fn seq_len(&self) -> Option<usize> {
        self.0.seq_len()
    }
}
