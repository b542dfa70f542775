//! `and` / `or` / `not` of masks (FlexAttention's `and_masks` / `or_masks`); combinators are
//! masks too. Tiles are classified from the children when that is exact (an `and` with an empty
//! child is empty; with all children full, full; with exactly one partial child and the rest full,
//! partial) and by scanning the tile otherwise (two partial children can cancel out).

use std::ops::Range;

use super::{scan_tile, AttnMask, TileKind};
use crate::error::{AttnError, Result};

/// The value of `get` that every child reporting one agrees on (`what` names it in errors).
fn common(
    children: &[Box<dyn AttnMask>],
    get: fn(&dyn AttnMask) -> Option<usize>,
    what: &str,
) -> Result<Option<usize>> {
    let mut agreed = None;
    for c in children {
        if let Some(n) = get(&**c) {
            match agreed {
                Some(m) if m != n => {
                    return Err(AttnError::Shape {
                        what: format!("{what} of `{}` in a combined mask", c.name()),
                        expected: m,
                        got: n,
                    })
                }
                _ => agreed = Some(n),
            }
        }
    }
    Ok(agreed)
}

/// Children of an `and` / `or`, with the batch size and length they agree on.
#[derive(Debug)]
struct Junction {
    children: Vec<Box<dyn AttnMask>>,
    batch: Option<usize>,
    seq: Option<usize>,
}

impl Junction {
    fn new(children: Vec<Box<dyn AttnMask>>) -> Result<Self> {
        Ok(Self {
            batch: common(&children, |c| c.batch_size(), "batch size")?,
            seq: common(&children, |c| c.seq_len(), "sequence length")?,
            children,
        })
    }

    /// Classification of a junction whose `absorbing` child kind decides the tile (empty for
    /// `and`, full for `or`) and whose `neutral` kind changes nothing (full for `and`, empty for
    /// `or`). One partial child among neutral ones is exact; two or more need a scan.
    fn classify(
        &self,
        this: &dyn AttnMask,
        absorbing: TileKind,
        neutral: TileKind,
        (b, h, q, k): (usize, usize, Range<usize>, Range<usize>),
    ) -> TileKind {
        let mut partial = 0;
        for c in &self.children {
            match c.classify(b, h, q.clone(), k.clone()) {
                kind if kind == absorbing => return absorbing,
                TileKind::Partial => partial += 1,
                _ => {}
            }
        }
        match partial {
            0 => neutral,
            1 => TileKind::Partial,
            _ => scan_tile(this, b, h, q, k),
        }
    }

    fn head_dependent(&self) -> bool {
        self.children.iter().any(|c| c.head_dependent())
    }
}

/// Allowed iff every child allows.
#[derive(Debug)]
pub struct And(Junction);

impl And {
    /// The conjunction of `children` (all must agree on batch size and sequence length).
    pub fn new(children: Vec<Box<dyn AttnMask>>) -> Result<Self> {
        Junction::new(children).map(Self)
    }
}

impl AttnMask for And {
    fn name(&self) -> &'static str {
        "and"
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        self.0.children.iter().all(|c| c.allows(b, h, q, k))
    }
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        self.0
            .classify(self, TileKind::Empty, TileKind::Full, (b, h, q, k))
    }
    fn head_dependent(&self) -> bool {
        self.0.head_dependent()
    }
    fn batch_size(&self) -> Option<usize> {
        self.0.batch
    }
    fn seq_len(&self) -> Option<usize> {
        self.0.seq
    }
}

/// Allowed iff some child allows.
#[derive(Debug)]
pub struct Or(Junction);

impl Or {
    /// The disjunction of `children` (all must agree on batch size and sequence length).
    pub fn new(children: Vec<Box<dyn AttnMask>>) -> Result<Self> {
        Junction::new(children).map(Self)
    }
}

impl AttnMask for Or {
    fn name(&self) -> &'static str {
        "or"
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        self.0.children.iter().any(|c| c.allows(b, h, q, k))
    }
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        self.0
            .classify(self, TileKind::Full, TileKind::Empty, (b, h, q, k))
    }
    fn head_dependent(&self) -> bool {
        self.0.head_dependent()
    }
    fn batch_size(&self) -> Option<usize> {
        self.0.batch
    }
    fn seq_len(&self) -> Option<usize> {
        self.0.seq
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
