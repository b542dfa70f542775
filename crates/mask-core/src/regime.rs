//! Static versus dynamic masking as one function of the epoch.
//!
//! The corruption of example `i` at epoch `e` under seed `s` is a pure function of `(s, e', i)`
//! where `e'` is the *effective epoch*:
//! - **dynamic** (RoBERTa, Liu et al. 2019): `e' = e`, a fresh mask every time a sequence is seen;
//! - **static** with duplication factor `k` (BERT's `dupe_factor`, Devlin et al. 2019): `e' = e mod k`.
//!   BERT wrote `k = 10` differently-masked copies of the corpus in preprocessing; evaluating the
//!   same function at `e mod k` produces exactly those `k` masks and cycles through them, without
//!   storing a single copy. `k = 1` is fully static: the same positions every epoch.

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};

/// When masks are redrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Regime {
    /// A fresh mask at every epoch.
    Dynamic {},
    /// `dupe_factor` fixed masks per example, cycled through by epoch.
    Static {
        /// Number of distinct masks per example (BERT: 10). Must be >= 1.
        dupe_factor: u64,
    },
}

impl Default for Regime {
    fn default() -> Self {
        Regime::Dynamic {}
    }
}

impl Regime {
    /// Fully static masking (`dupe_factor = 1`).
    pub fn fully_static() -> Self {
        Regime::Static { dupe_factor: 1 }
    }

    /// Checks `dupe_factor >= 1`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Regime::Static { dupe_factor: 0 } => Err(MaskError::InvalidValue {
                field: "dupe_factor",
                value: "0".into(),
                expected: "an integer >= 1",
            }),
            _ => Ok(()),
        }
    }

    /// The epoch whose mask is used at `epoch`.
    #[inline]
    pub fn effective_epoch(&self, epoch: u64) -> u64 {
        match *self {
            Regime::Dynamic {} => epoch,
            Regime::Static { dupe_factor } => epoch % dupe_factor.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_epochs() {
        assert_eq!(Regime::Dynamic {}.effective_epoch(7), 7);
        assert_eq!(Regime::fully_static().effective_epoch(7), 0);
        assert_eq!(Regime::Static { dupe_factor: 4 }.effective_epoch(7), 3);
        assert!(Regime::Static { dupe_factor: 0 }.validate().is_err());
    }
}
