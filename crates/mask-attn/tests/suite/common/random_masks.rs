//! Random masks for the kernel and tile tests: every built-in and combinations, sized for a
//! given batch, heads and length.

use mask_attn::*;
use mask_core::MaskRng;

/// Names of the generated masks, for messages.
pub const KINDS: [&str; 16] = [
    "none",
    "causal",
    "window_causal",
    "window_symmetric",
    "key_padding_lengths",
    "key_padding_mask",
    "document",
    "document_scattered",
    "prefix_lm",
    "token_exclusion",
    "random_key_drop_per_head",
    "and(key_padding, causal)",
    "or(document, window)",
    "not(causal)",
    "and(exclusion, window, drop)",
    "all_partial(causal)",
];

/// Mask number `kind` for a `[batch, heads, t, t]` grid, drawn from `seed`.
pub fn make(kind: usize, batch: usize, heads: usize, t: usize, seed: u64) -> Box<dyn AttnMask> {
    let mut rng = MaskRng::for_example(seed, kind as u64, t as u64, 3);
    let mut below = |n: usize| rng.below(n.max(1) as u64) as usize;
    let lengths: Vec<usize> = (0..batch).map(|_| 1 + below(t)).collect();
    let pad: Vec<bool> = (0..batch * t).map(|_| below(4) == 0).collect();
    let excluded: Vec<bool> = (0..batch * t).map(|_| below(5) == 0).collect();
    let window = 1 + below(t.min(12));
    // Contiguous documents of random lengths.
    let mut docs = vec![];
    for _ in 0..batch {
        let mut d = 0u32;
        for i in 0..t {
            if i > 0 && below(6) == 0 {
                d += 1;
            }
            docs.push(d);
        }
    }
    let scattered: Vec<u32> = (0..batch * t).map(|_| below(3) as u32).collect();
    let prefixes: Vec<usize> = (0..batch).map(|_| below(t + 1)).collect();
    let drop = |seed| Box::new(RandomKeyDrop::new(0.3, seed, batch, heads, t, true).unwrap());
    match kind {
        0 => Box::new(AllowAll),
        1 => Box::new(Causal),
        2 => Box::new(SlidingWindow::new(window, true).unwrap()),
        3 => Box::new(SlidingWindow::new(window, false).unwrap()),
        4 => Box::new(KeyPadding::from_lengths(&lengths, t).unwrap()),
        5 => Box::new(KeyPadding::from_pad_mask(&pad, batch, t).unwrap()),
        6 => Box::new(Document::new(&docs, batch, t).unwrap()),
        7 => Box::new(Document::new(&scattered, batch, t).unwrap()),
        8 => Box::new(PrefixLm::new(prefixes)),
        9 => Box::new(TokenExclusion::new(&excluded, batch, t).unwrap()),
        10 => drop(seed),
        11 => Box::new(
            And::new(vec![
                Box::new(KeyPadding::from_lengths(&lengths, t).unwrap()),
                Box::new(Causal),
            ])
            .unwrap(),
        ),
        12 => Box::new(
            Or::new(vec![
                Box::new(Document::new(&docs, batch, t).unwrap()),
                Box::new(SlidingWindow::new(window, false).unwrap()),
            ])
            .unwrap(),
        ),
        13 => Box::new(Not(Box::new(Causal))),
        14 => Box::new(
            And::new(vec![
                Box::new(TokenExclusion::new(&excluded, batch, t).unwrap()),
                Box::new(SlidingWindow::new(window, true).unwrap()),
                drop(seed + 1),
            ])
            .unwrap(),
        ),
        15 => Box::new(AllPartial(Causal)),
        _ => unreachable!(),
    }
}
