//! Sequential recommendation (BERT4Rec): the `u.data` reader and its errors, the leave-one-out
//! split, HR@10 / NDCG@10 against hand-computed values, negative sampling, and a smoke run of the
//! static-vs-dynamic study on the synthetic file (`tests/data/synthetic_u.data`, written by
//! `make_synthetic_u_data.py` beside it).

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use mask_train::recsys::*;
use mask_train::TrainError;

type B = Autodiff<NdArray<f32>>;

fn synthetic() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/synthetic_u.data")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mask-train-rec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
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
            TrainError::Rec(RecDataError::FieldCount {
                line: 2,
                got: 3,
                ..
            })
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
            TrainError::Rec(RecDataError::BadField {
                field: got, line, ..
            }) => {
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
        assert!(
            matches!(e, TrainError::Rec(RecDataError::Empty { .. })),
            "{e:?}"
        );
    }
    let e = read_movielens(Path::new("/nonexistent/u.data")).unwrap_err();
    assert!(matches!(e, TrainError::Io { .. }), "{e:?}");
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
fn hit_ratio_and_ndcg_reference_values() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    // rank 0: hit, NDCG 1
    assert_eq!(hit_ndcg_at(10, 0, 0), (1.0, 1.0));
    // rank 1: NDCG 1 / log2(3) = 0.630929...
    let (h, n) = hit_ndcg_at(10, 1, 0);
    assert!(h == 1.0 && close(n, 0.630_929_753_571_457_4), "{n}");
    // rank 9 (last inside the top 10): 1 / log2(11) = 0.289064...
    let (h, n) = hit_ndcg_at(10, 9, 0);
    assert!(h == 1.0 && close(n, 0.289_064_826_317_888), "{n}");
    // rank 10: outside
    assert_eq!(hit_ndcg_at(10, 10, 0), (0.0, 0.0));
    // 8 higher, 3 tied: ranks 8, 9, 10, 11 equally likely: HR 2/4, NDCG (1/log2 10 + 1/log2 11)/4
    let (h, n) = hit_ndcg_at(10, 8, 3);
    assert!(close(h, 0.5));
    assert!(
        close(n, (std::f64::consts::LOG10_2 + 0.289_064_826_317_888) / 4.0), // 1/log2(10) = log10(2)
        "{n}"
    );
    // rank counts and the mean over users
    assert_eq!(rank_counts(0.5, &[0.1, 0.9, 0.5, 0.7, 0.2]), (2, 1));
    let scores = vec![
        vec![3.0, 1.0, 2.0],      // rank 0
        vec![1.0, 2.0, 3.0],      // rank 2
        vec![2.0, 2.0, 1.0, 0.0], // rank 0 or 1
    ];
    let m = rank_metrics(2, &scores);
    assert_eq!(m.users, 3);
    assert!(close(m.hr, (1.0 + 0.0 + 1.0) / 3.0));
    let r1 = 1.0 / 3f64.log2();
    assert!(
        close(m.ndcg, (1.0 + 0.0 + (1.0 + r1) / 2.0) / 3.0),
        "{}",
        m.ndcg
    );
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

#[test]
fn config_serde_and_validation() {
    let c = RecStudyConfig::default();
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<RecStudyConfig>(&json).unwrap(), c);
    let t: RecStudyConfig = toml::from_str("steps = 10\n").unwrap();
    assert_eq!(t.steps, 10);
    assert_eq!(t.arms, c.arms);
    let e = toml::from_str::<RecStudyConfig>("stepz = 10\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("stepz"), "{e}");
    let e = toml::from_str::<RecStudyConfig>(
        "[[arms]]\nname = \"x\"\nregime = { type = \"sometimes\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sometimes"), "{e}");
    for (bad, field) in [
        (
            RecStudyConfig {
                mask_prob: 1.5,
                ..c.clone()
            },
            "mask_prob",
        ),
        (
            RecStudyConfig {
                max_len: 1,
                ..c.clone()
            },
            "max_len",
        ),
        (
            RecStudyConfig {
                lr: 0.0,
                ..c.clone()
            },
            "lr",
        ),
        (
            RecStudyConfig {
                arms: vec![],
                ..c.clone()
            },
            "arms",
        ),
    ] {
        match bad.validate().unwrap_err() {
            TrainError::InvalidConfig { field: f, .. } => assert_eq!(f, field),
            other => panic!("{other:?}"),
        }
    }
}

/// The example's logic end to end on the synthetic file with `quick()`: finite metrics in
/// [0, 1], the same candidates for every arm, falling training loss, files written.
#[test]
fn quick_study_on_synthetic_data() {
    let d = read_movielens(&synthetic()).unwrap();
    assert_eq!((d.user_ids.len(), d.n_items), (62, 40));
    let out = temp_dir("quick");
    let cfg = RecStudyConfig::default().quick();
    let start = std::time::Instant::now();
    let r = run_rec_study::<B>(&cfg, &d, &out, &Default::default()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{}", rec_results_table(&r));
    assert!(secs < 30.0, "quick study took {secs:.1} s");
    assert_eq!((r.users, r.dropped_users), (60, 2));
    assert_eq!(r.arms.len(), 2);
    let metrics = r
        .arms
        .iter()
        .flat_map(|a| [a.test, a.valid])
        .chain([r.popularity_test, r.popularity_valid]);
    for m in metrics {
        assert_eq!(m.users, 60);
        for v in [m.hr, m.ndcg] {
            assert!(v.is_finite() && (0.0..=1.0).contains(&v), "{m:?}");
        }
        assert!(m.ndcg <= m.hr + 1e-12, "{m:?}");
    }
    assert_eq!(r.arms[0].candidates_digest, r.arms[1].candidates_digest);
    for a in &r.arms {
        assert_eq!(a.step_losses.len(), cfg.steps as usize);
        assert!(a.step_losses.iter().all(|l| l.is_finite()));
        let (first, last) = (a.epoch_losses[0], *a.epoch_losses.last().unwrap());
        assert!(
            last < first - 0.3,
            "{}: loss {first:.3} -> {last:.3}",
            a.name
        );
        assert!(a.sequences_per_second > 0.0);
    }
    // Static and dynamic share the first dupe_factor epochs' masks, data order and init: the
    // losses agree until the static arm repeats its first mask (epoch 10 of 3 steps each).
    let shared = 10 * (60 / cfg.batch_size);
    // (NdArray's threaded reductions are not bit-reproducible: 1e-4.)
    let gap = |range: std::ops::Range<usize>| {
        range
            .map(|s| (r.arms[0].step_losses[s] - r.arms[1].step_losses[s]).abs())
            .fold(0.0, f64::max)
    };
    assert!(gap(0..shared) < 1e-4, "{}", gap(0..shared));
    assert!(gap(shared..cfg.steps as usize) > 1e-2);
    // The synthetic walks are learnable: both arms clearly beat the popularity floor.
    for a in &r.arms {
        assert!(
            a.test.hr > r.popularity_test.hr + 0.2,
            "{}: {:?}",
            a.name,
            a.test
        );
    }
    let json: RecReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json.arms.len(), 2);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| popularity |") && md.contains("dynamic"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
