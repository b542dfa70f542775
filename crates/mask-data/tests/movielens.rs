//! MovieLens data: the `u.data` reader and its errors, the leave-one-out split, negative
//! sampling, and the synthetic file (`tests/data/synthetic_u.data`, written by
//! `make_synthetic_u_data.py` beside it) against its Rust twin.

use std::path::{Path, PathBuf};

use mask_data::movielens::*;
use mask_data::DataError;

fn synthetic() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/synthetic_u.data")
}

#[test]
fn the_rust_generator_writes_the_committed_synthetic_file() {
    let file = std::fs::read_to_string(synthetic()).unwrap();
    assert_eq!(synthetic_u_data(), file);
    let d = parse_movielens(&file, "synthetic").unwrap();
    assert_eq!((d.user_ids.len(), d.n_items), (62, 40));
    let s = leave_one_out(&d);
    assert_eq!((s.users.len(), s.dropped_users), (60, 2));
    let counts = item_counts(&s, d.n_items);
    assert_eq!(
        counts.iter().map(|&c| c as usize).sum::<usize>(),
        s.users.iter().map(|u| u.train.len()).sum::<usize>()
    );
}

#[test]
fn reader_sorts_by_time_keeps_ties_in_file_order_and_remaps_items() {
    // user 7: items 50 (t=3), 10 (t=1), 30 (t=2), 20 (t=2, after 30 in the file)
    // user 2: items 10 (t=5), 99 (t=4)
    let text = "7\t50\t4\t3\n7 10 5 1\n2\t10\t3\t5\n7\t30\t1\t2\n\n7\t20\t2\t2\n2\t99\t4.5\t4\n";
    let d = parse_movielens(text, "inline").unwrap();
    assert_eq!(d.n_items, 5);
    assert_eq!(d.item_ids, vec![10, 20, 30, 50, 99]); // dense 1..=5 in order of original ids
    assert_eq!(d.user_ids, vec![2, 7]);
    assert_eq!(d.sequences[0], vec![5, 1]); // 99 then 10
    assert_eq!(d.sequences[1], vec![1, 3, 2, 4]); // 10, 30, 20 (tie: file order), 50
    assert_eq!(d.n_interactions(), 6);
}

#[test]
fn reader_errors_name_line_and_field() {
    let e = parse_movielens("1\t2\t3\t4\n1\t2\t3\n", "f").unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Malformed {
                line: 2,
                got: 3,
                expected: 4,
                ..
            }
        ),
        "{e:?}"
    );
    for (text, field) in [
        ("1\tx\t3\t4\n", "item"),
        ("-1\t2\t3\t4\n", "user"),
        ("1\t2\tfive\t4\n", "rating"),
        ("1\t2\t3\t4\n\n1\t2\t3\t4.5\n", "timestamp"),
    ] {
        let e = parse_movielens(text, "f").unwrap_err();
        match e {
            DataError::BadField {
                field: got, line, ..
            } => {
                assert_eq!(got, field, "{text:?}");
                assert_eq!(line, if field == "timestamp" { 3 } else { 1 });
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let msg = parse_movielens("1\t2\tfive\t4\n", "u.data")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 1") && msg.contains("rating") && msg.contains("five"),
        "{msg}"
    );
    for empty in ["", "\n\n  \n"] {
        let e = parse_movielens(empty, "f").unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
    }
    let e = read_movielens(Path::new("/nonexistent/u.data")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
}

#[test]
fn leave_one_out_split() {
    let text = "1 10 1 1\n1 11 1 2\n1 12 1 3\n1 13 1 4\n2 10 1 1\n2 11 1 2\n3 13 1 9\n3 12 1 8\n3 11 1 7\n";
    let d = parse_movielens(text, "t").unwrap();
    let s = leave_one_out(&d);
    assert_eq!(s.dropped_users, 1); // user 2 has 2 interactions
    assert_eq!(s.users.len(), 2);
    assert_eq!(
        s.users[0],
        UserSplit {
            user: 0,
            train: vec![1, 2],
            valid: 3,
            test: 4
        }
    );
    assert_eq!(
        s.users[1],
        UserSplit {
            user: 2,
            train: vec![2],
            valid: 3,
            test: 4
        }
    );
    assert_eq!(last_items(&[1, 2, 3, 4, 5], 3), &[3, 4, 5]);
    assert_eq!(last_items(&[1, 2], 3), &[1, 2]);
}

#[test]
fn negatives_exclude_interacted_items_and_are_reproducible() {
    let d = read_movielens(&synthetic()).unwrap();
    let s = leave_one_out(&d);
    let neg = sample_negatives(&d, &s, 15, 7);
    assert_eq!(neg.len(), s.users.len());
    for (u, n) in s.users.iter().zip(&neg) {
        let seen = &d.sequences[u.user];
        assert_eq!(n.len(), 15.min(d.n_items - seen.len()));
        for i in n {
            assert!(
                !seen.contains(i),
                "user {}: negative {i} was interacted with",
                u.user
            );
            assert!((1..=d.n_items as u32).contains(i));
        }
        let mut sorted = n.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), n.len(), "without replacement");
    }
    assert_eq!(neg, sample_negatives(&d, &s, 15, 7));
    assert_ne!(neg, sample_negatives(&d, &s, 15, 8));
    // Asking for more than is left gives every item never interacted with.
    let all = sample_negatives(&d, &s, 1000, 7);
    for (u, n) in s.users.iter().zip(&all) {
        assert_eq!(n.len(), d.n_items - d.sequences[u.user].len());
    }
}
