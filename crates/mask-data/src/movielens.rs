//! Sequential-recommendation data: a MovieLens `u.data` reader, the leave-one-out split and
//! sampled negatives, as BERT4Rec (Sun et al. 2019) evaluates.
//!
//! - Items are remapped densely to `1..=n_items` in order of their original ids (0 is left for
//!   padding); each user's interactions are sorted by timestamp, ties kept in file order.
//! - Leave-one-out: the last item is the test target, the second-to-last the validation target,
//!   the rest the training prefix. Users with fewer than 3 interactions are dropped (counted).
//! - Negatives are sampled uniformly without replacement from the items the user never
//!   interacted with, once per user from a seed (BERT4Rec sampled by popularity; uniform is the
//!   simpler, documented choice), so every model and baseline is scored on the same lists.
//!
//! MovieLens may not be redistributed: `scripts/fetch_movielens.sh` fetches ML-100k; the tests
//! use a synthetic file of the same shape.

use std::collections::BTreeMap;
use std::path::Path;

use mask_core::MaskRng;
use serde::{Deserialize, Serialize};

use crate::error::{io_error, DataError, Result};

/// Interaction histories, one time-ordered item sequence per user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interactions {
    /// Number of distinct items; dense ids are `1..=n_items`.
    pub n_items: usize,
    /// Original id of dense item `i` at index `i - 1`.
    pub item_ids: Vec<u64>,
    /// Original id of each user, in order of the sequences.
    pub user_ids: Vec<u64>,
    /// Dense item ids per user, sorted by timestamp (ties in file order).
    pub sequences: Vec<Vec<u32>>,
}

impl Interactions {
    /// Total number of interactions.
    pub fn n_interactions(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }
}

/// Reads a MovieLens `u.data` file: `user item rating timestamp` per line, whitespace
/// separated (tabs in the original), blank lines skipped.
pub fn read_movielens(path: &Path) -> Result<Interactions> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let text = crate::text::strip_bom(&text);
    parse_movielens(text, &path.display().to_string())
}

/// Parses `u.data` text; `source_name` names it in errors.
pub fn parse_movielens(text: &str, source_name: &str) -> Result<Interactions> {
    let mut rows: Vec<(u64, u64, u64)> = vec![]; // (user, item, timestamp) in file order
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 4 {
            return Err(DataError::Malformed {
                what: format!("{source_name} (user item rating timestamp)"),
                line: n + 1,
                got: fields.len(),
                expected: 4,
            });
        }
        let bad = |field, value: &str, expected| DataError::BadField {
            what: source_name.into(),
            line: n + 1,
            field,
            value: value.into(),
            expected,
        };
        let int = |i: usize, field| {
            fields[i]
                .parse::<u64>()
                .map_err(|_| bad(field, fields[i], "an unsigned integer"))
        };
        let (user, item, timestamp) = (int(0, "user")?, int(1, "item")?, int(3, "timestamp")?);
        match fields[2].parse::<f64>() {
            Ok(r) if r.is_finite() => {}
            _ => return Err(bad("rating", fields[2], "a finite number")),
        }
        rows.push((user, item, timestamp));
    }
    if rows.is_empty() {
        return Err(DataError::Empty {
            what: source_name.into(),
        });
    }
    let items: BTreeMap<u64, u32> = rows.iter().map(|r| (r.1, 0)).collect();
    let item_ids: Vec<u64> = items.keys().copied().collect();
    let dense: BTreeMap<u64, u32> = item_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32 + 1))
        .collect();
    let mut by_user: BTreeMap<u64, Vec<(u64, u32)>> = BTreeMap::new();
    for &(user, item, ts) in &rows {
        by_user.entry(user).or_default().push((ts, dense[&item]));
    }
    let mut user_ids = vec![];
    let mut sequences = vec![];
    for (user, mut seq) in by_user {
        seq.sort_by_key(|&(ts, _)| ts); // stable: ties keep file order
        user_ids.push(user);
        sequences.push(seq.into_iter().map(|(_, item)| item).collect());
    }
    Ok(Interactions {
        n_items: item_ids.len(),
        item_ids,
        user_ids,
        sequences,
    })
}

/// One user's leave-one-out split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSplit {
    /// Index of the user in [`Interactions::sequences`].
    pub user: usize,
    /// Training prefix (all but the last two items).
    pub train: Vec<u32>,
    /// Validation target (second-to-last item).
    pub valid: u32,
    /// Test target (last item).
    pub test: u32,
}

/// The leave-one-out split of every user with at least 3 interactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LooSplit {
    /// Kept users.
    pub users: Vec<UserSplit>,
    /// Users dropped for having fewer than 3 interactions.
    pub dropped_users: usize,
}

/// Splits every user's sequence: last item = test, second-to-last = validation, rest = training.
pub fn leave_one_out(data: &Interactions) -> LooSplit {
    let mut users = vec![];
    let mut dropped_users = 0;
    for (user, seq) in data.sequences.iter().enumerate() {
        if seq.len() < 3 {
            dropped_users += 1;
            continue;
        }
        let n = seq.len();
        users.push(UserSplit {
            user,
            train: seq[..n - 2].to_vec(),
            valid: seq[n - 2],
            test: seq[n - 1],
        });
    }
    LooSplit {
        users,
        dropped_users,
    }
}

/// The last `max_len` items of `seq`.
pub fn last_items(seq: &[u32], max_len: usize) -> &[u32] {
    &seq[seq.len().saturating_sub(max_len)..]
}

/// Stream id of negative sampling (distinct from the masking streams of `mask-core`).
const STREAM_NEGATIVES: u64 = 0x004e_4547;

/// `n` negatives per user of `split`, uniformly without replacement from the items (`1..=n_items`)
/// the user never interacted with (all of them when fewer are left), from `(seed, user index)`.
pub fn sample_negatives(
    data: &Interactions,
    split: &LooSplit,
    n: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    split
        .users
        .iter()
        .map(|u| {
            let mut seen = vec![false; data.n_items + 1];
            for &i in &data.sequences[u.user] {
                seen[i as usize] = true;
            }
            let mut pool: Vec<u32> = (1..=data.n_items as u32)
                .filter(|&i| !seen[i as usize])
                .collect();
            let k = n.min(pool.len());
            let mut rng = MaskRng::for_example(seed, 0, u.user as u64, STREAM_NEGATIVES);
            for i in 0..k {
                let j = i + rng.below((pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            pool.truncate(k);
            pool
        })
        .collect()
}

/// How often each item occurs in the training prefixes (index = dense item id; `n_items + 2`
/// entries so that padding and a mask item index safely): the popularity baseline's score.
pub fn item_counts(split: &LooSplit, n_items: usize) -> Vec<u32> {
    let mut count = vec![0u32; n_items + 2];
    for u in &split.users {
        for &i in &u.train {
            count[i as usize] += 1;
        }
    }
    count
}

/// A small interaction file in MovieLens `u.data` format with sequential structure a model can
/// learn, the one `tests/data/synthetic_u.data` holds (written by
/// `tests/data/make_synthetic_u_data.py`, whose docstring states the rule): 60 users walking
/// around a circle of 40 items with a user-specific start and stride, plus two users with 2
/// interactions (dropped by the leave-one-out split). The studies use it when the real
/// MovieLens file is absent and a smoke run is asked for.
pub fn synthetic_u_data() -> String {
    let mut rows = vec![];
    for u in 1..=60u64 {
        let (s, d, n) = ((7 * u) % 40 + 1, 1 + u % 3, 8 + (5 * u) % 13);
        for t in 0..n {
            let item = (s - 1 + t * d) % 40 + 1;
            let mut ts = 880_000_000 + 1000 * u + 10 * t;
            if u == 5 && t == 3 {
                ts -= 10;
            }
            rows.push((t, u, 100 + item, 1 + (u + t) % 5, ts));
        }
    }
    for u in [61u64, 62] {
        for t in 0..2u64 {
            rows.push((t, u, 101 + t, 3, 880_000_000 + 1000 * u + 10 * t));
        }
    }
    rows.sort_unstable();
    rows.iter()
        .map(|(_, u, item, rating, ts)| format!("{u}\t{item}\t{rating}\t{ts}\n"))
        .collect()
}
