//! The `dynmask` binary end to end: clear errors for wrong paths, malformed configs, empty
//! corpora, unknown arms, zero flags, impossible sizes and missing GPUs; a pretrain -> kill ->
//! resume -> eval -> finetune chain through checkpoints; run directories that protect
//! themselves; the vision and recommendation studies through `compare --quick`; reproducible
//! results files; and `plot`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dynmask(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dynmask"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dynmask-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(name: &str) -> String {
    format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn text_config() -> String {
    config("static_vs_dynamic.toml")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A study file from the shipped text config with `from` replaced by `to`.
fn edited(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(text_config()).unwrap();
    assert!(text.contains(from), "{from}");
    let p = dir.join(name);
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    p
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let (ok, _, err) = dynmask(&["compare", "/nonexistent/study.toml"]);
    assert!(!ok);
    assert!(err.contains("study `/nonexistent/study.toml`"), "{err}");

    let dir = temp_dir("bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "kind = \"text\"\n[train]\nsteps = \"many\"\n").unwrap();
    let (ok, _, err) = dynmask(&["compare", s(&bad)]);
    assert!(!ok);
    assert!(err.contains("steps") && err.contains("bad.toml"), "{err}");
    std::fs::write(&bad, "kind = \"audio\"\n").unwrap();
    let (ok, _, err) = dynmask(&["compare", s(&bad)]);
    assert!(!ok && err.contains("audio"), "{err}");

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let with_corpus = edited(
        &dir,
        "corpus.toml",
        "seeds = [0, 1, 2]",
        &format!("seeds = [0, 1, 2]\ncorpus = \"{}\"", empty.display()),
    );
    let out = dir.join("o");
    let (ok, _, err) = dynmask(&["compare", s(&with_corpus), "--out-dir", s(&out)]);
    assert!(!ok);
    assert!(err.contains("is empty (no usable records)"), "{err}");

    let (ok, _, err) = dynmask(&[
        "pretrain",
        &text_config(),
        "--quick",
        "--arm",
        "sometimes",
        "--out-dir",
        s(&dir.join("p")),
    ]);
    assert!(!ok);
    assert!(
        err.contains("`arm` = sometimes") && err.contains("static k=1, static k=4, dynamic"),
        "{err}"
    );

    let (ok, _, err) = dynmask(&["compare", &text_config(), "--backend", "tpu"]);
    assert!(!ok);
    assert!(err.contains("invalid value 'tpu'"), "{err}");

    // Regression (run-state issue, finding 8): zero flags were silently coerced.
    for (flag, field) in [
        ("--checkpoint-every", "checkpoint_every"),
        ("--keep-last", "keep_last"),
    ] {
        let (ok, _, err) = dynmask(&[
            "pretrain",
            &text_config(),
            "--quick",
            "--arm",
            "dynamic",
            flag,
            "0",
            "--out-dir",
            s(&dir.join("z")),
        ]);
        assert!(!ok);
        assert!(err.contains(&format!("`{field}` = 0")), "{err}");
    }
    let (ok, _, err) = dynmask(&["compare", &text_config(), "--seeds", "0"]);
    assert!(!ok && err.contains("`--seeds` = 0"), "{err}");

    // Regression (run-state issue, finding 8): --quick silently replaced a bad batch_size.
    let zero_batch = edited(&dir, "zero.toml", "batch_size = 32", "batch_size = 0");
    let (ok, _, err) = dynmask(&["compare", s(&zero_batch), "--quick"]);
    assert!(!ok && err.contains("`batch_size` = 0"), "{err}");

    // Regression (run-state issue, finding 5): [finetune] was never validated.
    let nan_lr = edited(&dir, "nan.toml", "lr = 2e-3", "lr = nan");
    let (ok, _, err) = dynmask(&["compare", s(&nan_lr), "--quick"]);
    assert!(!ok && err.contains("`lr` = NaN"), "{err}");

    // Regression (run-state issue, finding 6): arms whose names share a directory.
    let twins = edited(
        &dir,
        "twins.toml",
        "name = \"static k=4\"",
        "name = \"static k_1\"",
    );
    let (ok, _, err) = dynmask(&["compare", s(&twins), "--quick"]);
    assert!(!ok);
    assert!(
        err.contains("`static k=1`") && err.contains("`static k_1`"),
        "{err}"
    );
}

/// Regression (run-state issue, finding 7): `--backend wgpu` without an adapter panicked (exit
/// 101). A device index no machine here has stands in for a missing GPU.
#[test]
fn a_missing_gpu_is_a_typed_error_suggesting_a_cpu_backend() {
    let dir = temp_dir("gpu");
    let (ok, _, err) = dynmask(&[
        "compare",
        &text_config(),
        "--quick",
        "--backend",
        "wgpu",
        "--device",
        "7",
        "--out-dir",
        s(&dir),
    ]);
    assert!(!ok);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("--backend flex") && err.contains("--device 7"),
        "{err}"
    );
    let (ok, _, err) = dynmask(&["compare", &text_config(), "--device", "1"]);
    assert!(
        !ok && err.contains("`--device 1` is invalid for the flex backend"),
        "{err}"
    );
}

/// Regression (run-state issue, finding 7): `max_len = 100000` with a 1 MB document aborted on
/// allocation at step 6. It is refused up front, with the estimate.
#[test]
fn an_input_too_large_for_memory_is_refused_up_front() {
    let dir = temp_dir("big");
    let corpus = dir.join("big.txt");
    let para = "the quick brown fox jumps over the lazy dog and then some more words follow ";
    let big: String = para.repeat(1_000_000 / para.len());
    let mut text = String::new();
    for _ in 0..40 {
        text.push_str("a short document of several words for the held out split\n");
    }
    text.push_str(&big);
    text.push('\n');
    std::fs::write(&corpus, text).unwrap();
    let study = edited(
        &dir,
        "big.toml",
        "max_len = 64 ",
        &format!("corpus = \"{}\"\nmax_len = 100000 ", corpus.display()),
    );
    let (ok, _, err) = dynmask(&[
        "compare",
        s(&study),
        "--out-dir",
        s(&dir.join("out")),
        "--seeds",
        "1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("needs about") && err.contains("MiB") && err.contains("max_len"),
        "{err}"
    );
}

fn run_dir(out: &Path, arm: &str) -> PathBuf {
    out.join(arm).join("seed-0")
}

fn step_records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .map(|v| v["record"].clone())
        .collect()
}

#[test]
fn pretrain_resume_eval_finetune_through_checkpoints() {
    let dir = temp_dir("chain");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let pretrain_steps = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "pretrain",
            "--quick",
            "--arm",
            "dynamic",
            "--checkpoint-every",
            "32",
            "--keep-last",
            "2",
            "--steps",
            steps,
            "--out-dir",
            s(out),
        ];
        let cfg = text_config();
        args.insert(1, &cfg);
        args.extend(extra);
        dynmask(&args)
    };
    let pretrain = |out: &Path, extra: &[&str]| pretrain_steps(out, "64", extra);
    // Uninterrupted.
    let (ok, stdout, err) = pretrain(&a, &[]);
    assert!(ok, "{err}");
    assert!(stdout.contains("held-out mlm_loss"), "{stdout}");
    let ckpts = run_dir(&a, "dynamic").join("checkpoints");
    let mut files: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["ckpt-0000000032.dynmask", "ckpt-0000000064.dynmask"]
    );

    // Regression (run-state issue, finding 1): a second run over the same directory destroyed
    // the first's checkpoints. It is refused, and the state is untouched.
    let (ok, _, err) = pretrain(&a, &[]);
    assert!(!ok && err.contains("checkpoints up to step 64"), "{err}");
    assert_eq!(std::fs::read_dir(&ckpts).unwrap().count(), 2);

    // Killed after step 40 (checkpoint at 32), then resumed: the same steps as uninterrupted.
    let killed = Command::new(env!("CARGO_BIN_EXE_dynmask"))
        .args([
            "pretrain",
            &text_config(),
            "--quick",
            "--arm",
            "dynamic",
            "--checkpoint-every",
            "32",
            "--steps",
            "64",
            "--out-dir",
            s(&b),
            "--quiet",
        ])
        .env("DYNMASK_FAULT_KILL_AFTER_STEP", "40")
        .status()
        .unwrap();
    assert!(!killed.success());
    let (ok, _, err) = pretrain(&b, &["--resume"]);
    assert!(ok, "{err}");
    let (ra, rb) = (
        step_records(&run_dir(&a, "dynamic")),
        step_records(&run_dir(&b, "dynamic")),
    );
    assert_eq!(ra.len(), 64);
    assert_eq!(rb.len(), 64, "each step logged once");
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x["digest"], y["digest"]);
        let (p, q) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!(
            (p - q).abs() <= 1e-6 * p.abs(),
            "step {}: {p} vs {q}",
            x["step"]
        );
    }
    // Data-parallel on two peers sharing the CPU: the batches of one device, every step
    // logged once by peer 0, and it learns (dropout is keyed per peer, so the losses are close
    // to one device's but not equal). A second CPU device is refused by its index.
    let c = dir.join("c");
    let (ok, _, err) = pretrain(&c, &["--devices", "0,0"]);
    assert!(ok, "{err}");
    let rc = step_records(&run_dir(&c, "dynamic"));
    assert_eq!(rc.len(), 64);
    for (x, y) in ra.iter().zip(&rc) {
        assert_eq!(x["digest"], y["digest"], "step {}", x["step"]);
    }
    let mean = |r: &[serde_json::Value]| {
        r.iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    assert!(
        mean(&rc[56..]) < mean(&rc[..8]) - 0.5,
        "{} {}",
        mean(&rc[..8]),
        mean(&rc[56..])
    );
    let (ok, _, err) = pretrain(&dir.join("d"), &["--devices", "0,1"]);
    assert!(!ok && err.contains("`--device 1` is invalid"), "{err}");

    let last = ckpts.join("ckpt-0000000064.dynmask");
    let resumed_last = run_dir(&b, "dynamic").join("checkpoints/ckpt-0000000064.dynmask");

    // A different run length is refused by name; --extend accepts it.
    let (ok, _, err) = pretrain_steps(&b, "80", &["--resume", s(&resumed_last)]);
    assert!(!ok);
    assert!(
        err.contains("`train.steps` is 64 in the checkpoint but 80"),
        "{err}"
    );
    let (ok, stdout, err) = pretrain_steps(&b, "80", &["--resume", s(&resumed_last), "--extend"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("step 80"), "{stdout}");

    let common = ["--quick", "--out-dir"];
    let (ok, stdout, err) = dynmask(&[
        "eval",
        &text_config(),
        common[0],
        common[1],
        s(&a),
        "--checkpoint",
        s(&last),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("mlm_loss "), "{stdout}");
    let (ok, stdout, err) = dynmask(&[
        "finetune",
        &text_config(),
        common[0],
        common[1],
        s(&a),
        "--checkpoint",
        s(&last),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("accuracy") && stdout.contains("F1"),
        "{stdout}"
    );
}

/// Regression (run-state issue, finding 2) and the acceptance of that issue: the same seed in
/// two fresh out_dirs gave different masks from step 0 (the tokenizer trained differently). Now
/// the two results files are identical apart from wall-clock fields.
#[test]
fn the_main_job_repeats_exactly_in_fresh_directories() {
    let dir = temp_dir("repeat");
    let read = |out: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        for r in v["runs"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("seconds");
        }
        // Where a study ran and how many runs at a time do not change its numbers.
        v["study"].as_object_mut().unwrap().remove("out_dir");
        v["study"].as_object_mut().unwrap().remove("jobs");
        v
    };
    // Two runs at once, then one at a time: the same numbers, with dropout on (its masks are
    // keyed per run and step on the training thread, not drawn from burn's shared generator).
    let config = edited(&dir, "dropout.toml", "dropout = 0.0 ", "dropout = 0.1 ");
    for (name, jobs) in [("one", "2"), ("two", "1")] {
        let (ok, _, err) = dynmask(&[
            "compare",
            s(&config),
            "--quick",
            "--steps",
            "24",
            "--jobs",
            jobs,
            "--out-dir",
            s(&dir.join(name)),
        ]);
        assert!(ok, "{err}");
    }
    let (one, two) = (read(&dir.join("one")), read(&dir.join("two")));
    assert_eq!(one, two);
    // Every run carries the held-out protocol's headline beside its baseline, and the study
    // its contrasts.
    for r in one["runs"].as_array().unwrap() {
        let h = &r["heldout"];
        let (loss, unigram) = (h["mask_token_loss"].as_f64(), h["unigram_loss"].as_f64());
        assert!(loss.unwrap() > 0.0 && unigram.unwrap() > 0.0, "{h}");
        assert_eq!(h["masks"].as_array().unwrap().len(), 5);
        // The POS probe beside its baselines, each a share of the same test words.
        let p = &r["pos_probe"];
        let b = &p["baselines"];
        assert!(b["words"].as_u64().unwrap() > 100, "{p}");
        for share in [
            &p["accuracy"],
            &p["initial_encoder_accuracy"],
            &b["majority"],
            &b["word_type"],
            &b["first_piece"],
        ] {
            let x = share.as_f64().unwrap();
            assert!(x > 0.0 && x < 1.0, "{p}");
        }
    }
    assert_eq!(one["contrasts"].as_array().unwrap().len(), 3);
    assert_eq!(one["probe_contrasts"].as_array().unwrap().len(), 3);
    // Bernoulli masking is blind to PMI units: each arm's share of masked tokens inside them is
    // the share of all tokens inside them, within 5 standard errors of a proportion over the
    // arm's masked tokens.
    let pmi = &one["pmi_units"];
    let tokens = pmi["tokens"].as_f64().unwrap();
    assert!(tokens > 0.0 && tokens < 1.0, "{pmi}");
    for a in pmi["arms"].as_array().unwrap() {
        let (share, n) = (a["share"].as_f64().unwrap(), a["masked"].as_f64().unwrap());
        let se = (tokens * (1.0 - tokens) / n).sqrt();
        assert!(n > 500.0 && (share - tokens).abs() < 5.0 * se, "{pmi}");
    }
    let text = std::fs::read_to_string(dir.join("one/results.json")).unwrap();
    assert!(!text.contains("null") && !text.contains("NaN"));
    // Runs have their own directories; a second compare is refused, --resume reuses, --fresh
    // starts over.
    for arm in ["static-k-1", "static-k-4", "dynamic"] {
        assert!(
            run_dir(&dir.join("one"), arm).join("result.json").exists(),
            "{arm}"
        );
    }
    let one = dir.join("one");
    let again = |flag: Option<&str>| {
        let mut args = vec!["compare", "--quick", "--steps", "24", "--out-dir", s(&one)];
        args.insert(1, s(&config));
        args.extend(flag);
        dynmask(&args)
    };
    let (ok, _, err) = again(None);
    assert!(!ok && err.contains("--fresh"), "{err}");
    let before = read(&one);
    let (ok, _, err) = again(Some("--resume"));
    assert!(ok, "{err}");
    assert!(err.contains("result reused"), "{err}");
    assert_eq!(read(&one), before);
    // --rescore scores finished runs again from their checkpoints: the same protocol gives the
    // same numbers, and the training record (wall time included) is the original one.
    let seconds = |v: &serde_json::Value| -> Vec<f64> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seconds"].as_f64().unwrap())
            .collect()
    };
    let raw = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("results.json")).unwrap()).unwrap()
    };
    let trained = seconds(&raw(&one));
    let (ok, _, err) = again(Some("--rescore"));
    assert!(ok, "{err}");
    assert!(!err.contains("result reused"), "{err}");
    assert_eq!(read(&one), before);
    assert_eq!(seconds(&raw(&one)), trained);
    let (ok, _, err) = again(Some("--fresh"));
    assert!(ok, "{err}");
    assert_eq!(read(&one), before, "a fresh rerun gives the same numbers");
}

/// The vision and recommendation studies through the CLI (the BERT4Rec one on synthetic data
/// when MovieLens is absent), each checked against its baselines.
#[test]
fn vision_and_recsys_studies_run_quick_through_compare() {
    let dir = temp_dir("kinds");
    let (ok, stdout, err) = dynmask(&[
        "compare",
        &config("mae_fashion_mnist.toml"),
        "--quick",
        "--out-dir",
        s(&dir.join("mae")),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("| raw pixels") && stdout.contains("| dynamic"),
        "{stdout}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mae/results.json")).unwrap())
            .unwrap();
    let base = &r["baselines"][0];
    let init_mse = base["random_init_recon"]["recon_mse"].as_f64().unwrap();
    for run in r["runs"].as_array().unwrap() {
        let mse = run["evals"].as_array().unwrap().last().unwrap()["metrics"]["recon_mse"]
            .as_f64()
            .unwrap();
        assert!(
            mse < init_mse,
            "pretraining reconstructs better than init: {mse} vs {init_mse}"
        );
    }
    // The memorisation gap of every run, on all 512 training images of the smoke size, and
    // the one contrast of the two arms for each metric.
    for run in r["runs"].as_array().unwrap() {
        let m = &run["memorisation"];
        assert_eq!(m["images"], 512, "{m}");
        let (t, f) = (
            m["train_masks"]["recon_mse"].as_f64().unwrap(),
            m["fresh_masks"]["recon_mse"].as_f64().unwrap(),
        );
        assert!(t > 0.0 && f > 0.0, "{m}");
        assert!((m["gap"].as_f64().unwrap() - (f - t)).abs() < 1e-12, "{m}");
    }
    for metric in ["recon_mse", "probe_accuracy", "memorisation_gap"] {
        assert_eq!(
            r["contrasts"][metric].as_array().unwrap().len(),
            1,
            "{metric}"
        );
    }
    assert!(stdout.contains("Memorisation gap"), "{stdout}");
    let png = std::fs::read(dir.join("mae/mae_grid.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let rec = dir.join("rec");
    let (ok, stdout, err) = dynmask(&[
        "compare",
        &config("bert4rec_movielens.toml"),
        "--quick",
        "--out-dir",
        s(&rec),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("| popularity"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rec.join("results.json")).unwrap()).unwrap();
    if !Path::new("data/movielens/ml-100k/u.data").exists() {
        assert_eq!(r["source"], "synthetic");
        assert_eq!(r["users"], 60);
    }
    let pop = r["popularity_test"]["hr"].as_f64().unwrap();
    let users = r["users"].as_u64().unwrap() as usize;
    let bits = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    for run in r["runs"].as_array().unwrap() {
        let hr = run["test"]["hr"].as_f64().unwrap();
        assert!(hr > pop, "{}: HR@10 {hr} vs popularity {pop}", run["arm"]);
        // The sampled negatives are a subset of the full ranking's candidates: a user hit under
        // full ranking is a hit under sampling, never the other way round.
        let (sampled, full) = (bits(&run["test_hits"]), bits(&run["test_full_hits"]));
        assert_eq!((sampled.len(), full.len()), (users, users));
        assert!(sampled.iter().zip(&full).all(|(s, f)| f <= s));
        let mean = sampled.iter().sum::<u64>() as f64 / users as f64;
        assert!((mean - hr).abs() < 1e-9, "no ties: hits average to HR@10");
        assert!(run["test_full"]["hr"].as_f64().unwrap() <= hr);
    }
    assert!(r["popularity_full"]["hr"].as_f64().unwrap() <= pop);
    // Two arms: one contrast per metric; McNemar for the one seed, sampled and full.
    assert_eq!(r["contrasts"]["hr"].as_array().unwrap().len(), 1);
    assert_eq!(r["contrasts"]["full_ndcg"].as_array().unwrap().len(), 1);
    assert_eq!(r["contrasts"]["mcnemar"].as_array().unwrap().len(), 2);
    assert!(stdout.contains("McNemar"), "{stdout}");
}

/// Issue 16's acceptance: both multi-task configs run through `compare --quick`; every arm is
/// scored on all four metrics; each task trains its share of steps; the UniLM arm, which
/// trained left to right, predicts next tokens better than MLM alone, which never did (its
/// head predicts the token at the position itself); the other commands refuse the study.
#[test]
fn multitask_and_unilm_configs_run_quick_through_compare() {
    let dir = temp_dir("multitask");
    let (ok, stdout, err) = dynmask(&[
        "compare",
        &config("multitask.toml"),
        "--quick",
        "--out-dir",
        s(&dir.join("mt")),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("| UniLM |") && stdout.contains("causal LM loss"),
        "{stdout}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mt/results.json")).unwrap())
            .unwrap();
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "3 arms x 2 quick seeds");
    let steps = |run: &serde_json::Value| -> Vec<u64> {
        run["steps_per_task"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let by = |arm: &str, seed: u64| {
        runs.iter()
            .find(|x| x["arm"] == arm && x["seed"] == seed)
            .unwrap()
    };
    for seed in [0, 1] {
        // Round robin over 96 quick steps.
        assert_eq!(steps(by("MLM alone", seed)), vec![96]);
        assert_eq!(steps(by("MLM + POS", seed)), vec![48, 48]);
        assert_eq!(steps(by("UniLM", seed)), vec![32, 32, 32]);
        let causal = |arm| by(arm, seed)["causal"]["loss"].as_f64().unwrap();
        assert!(
            causal("UniLM") < causal("MLM alone"),
            "seed {seed}: causal LM loss {} vs {}",
            causal("UniLM"),
            causal("MLM alone")
        );
    }
    for run in runs {
        for (metric, key) in [
            ("mlm", "mask_token_loss"),
            ("causal", "loss"),
            ("prefix", "loss"),
        ] {
            let v = run[metric][key].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{metric}: {v}");
        }
        let history = run["history"].as_array().unwrap();
        assert!(history.iter().all(|h| h["task"].is_u64()));
        let acc = run["pos_probe"]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    // Two contrasts per metric, four metrics.
    let contrasts = r["contrasts"].as_array().unwrap();
    assert_eq!(contrasts.len(), 4);
    assert!(contrasts
        .iter()
        .all(|m| m["contrasts"].as_array().unwrap().len() == 2));
    let (ok, stdout, err) = dynmask(&["report", s(&dir.join("mt/results.json"))]);
    assert!(ok, "{err}");
    assert!(stdout.contains("| MLM + POS |"), "{stdout}");

    let (ok, stdout, err) = dynmask(&[
        "compare",
        &config("unilm.toml"),
        "--quick",
        "--out-dir",
        s(&dir.join("unilm")),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("| UniLM |"), "{stdout}");
    let (ok, _, err) = dynmask(&[
        "pretrain",
        &config("unilm.toml"),
        "--quick",
        "--arm",
        "UniLM",
        "--out-dir",
        s(&dir.join("p")),
    ]);
    assert!(!ok);
    assert!(err.contains("dynmask compare"), "{err}");
}

#[test]
fn report_prints_the_tables_of_a_finished_study_and_refuses_other_files() {
    let dir = temp_dir("plot");
    let out = dir.join("study");
    let (ok, _, err) = dynmask(&[
        "compare",
        &text_config(),
        "--quick",
        "--steps",
        "8",
        "--out-dir",
        s(&out),
    ]);
    assert!(ok, "{err}");
    let svg = dir.join("again.svg");
    let results = out.join("results.json");
    let (ok, stdout, err) = dynmask(&["report", s(&results), "--out", s(&svg)]);
    assert!(ok, "{err}");
    // The headline, breakdown, per-mask and POS probe tables have a row per static arm; the
    // two contrasts tables' rows are static k=4 - static k=1, dynamic - static k=1,
    // dynamic - static k=4.
    assert_eq!(stdout.matches("| static k=").count(), 4 * 2 + 2, "{stdout}");
    assert_eq!(
        stdout.matches("| dynamic - static k=4 |").count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains("Frozen-encoder POS probe") && stdout.contains("PMI units"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| unigram |") && stdout.contains("Holm"),
        "{stdout}"
    );
    let (ok, again, _) = dynmask(&["plot", s(&results), "--out", s(&svg)]);
    assert!(ok && again == stdout, "`plot` is an alias of `report`");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("dynamic"),
        "{text:.200}"
    );
    let (ok, _, err) = dynmask(&["plot", &text_config()]);
    assert!(!ok);
    assert!(err.contains("results.json"), "{err}");
}

/// `dynmask export` writes the folder HF transformers loads (config, weights with HF names,
/// vocabulary, tokenizer), and refuses a model HF BERT cannot represent, naming the field.
#[test]
fn export_writes_an_hf_bert_folder_and_refuses_rotary_models() {
    let dir = temp_dir("export");
    let learned = edited(
        &dir,
        "learned.toml",
        "position = \"rotary\"",
        "position = \"learned\"",
    );
    let out = dir.join("runs");
    let (ok, _, err) = dynmask(&[
        "pretrain",
        s(&learned),
        "--quick",
        "--arm",
        "dynamic",
        "--steps",
        "4",
        "--checkpoint-every",
        "4",
        "--out-dir",
        s(&out),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let ckpt = run_dir(&out, "dynamic").join("checkpoints/ckpt-0000000004.dynmask");
    let hf = dir.join("hf");
    let export = |cfg: &Path| {
        dynmask(&[
            "export",
            s(cfg),
            "--quick",
            "--out-dir",
            s(&out),
            "--checkpoint",
            s(&ckpt),
            "--out",
            s(&hf),
            "--quiet",
        ])
    };
    let (ok, stdout, err) = export(&learned);
    assert!(ok, "{err}");
    assert!(stdout.contains("model.safetensors"), "{stdout}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForMaskedLM");
    // The quick model: d_model 64, 1 layer, a position table for its 48-token fine-tuning inputs.
    assert_eq!(config["hidden_size"], 64);
    assert_eq!(config["num_hidden_layers"], 1);
    assert_eq!(config["max_position_embeddings"], 48);
    let vocab_size = config["vocab_size"].as_u64().unwrap() as usize;
    let vocab = std::fs::read_to_string(hf.join("vocab.txt")).unwrap();
    assert_eq!(vocab.lines().count(), vocab_size);
    assert!(vocab.lines().any(|l| l == "[MASK]"));
    let tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tokenizer["model"]["type"], "WordPiece");
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert!(names.contains(&"bert.embeddings.token_type_embeddings.weight"));
    assert!(names.contains(&"bert.encoder.layer.0.attention.self.query.weight"));
    assert!(names.contains(&"cls.predictions.bias"));
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("bert.") || n.starts_with("cls.")),
        "{names:?}"
    );

    // The shipped (rotary) config: refused, naming the field and what HF BERT needs.
    let (ok, _, err) = export(Path::new(&text_config()));
    assert!(!ok);
    assert!(
        err.contains("`position` = rotary") && err.contains("learned"),
        "{err}"
    );
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `child` at most `limit`; kills it past that. Returns whether it succeeded.
fn wait_bounded(child: &mut std::process::Child, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Two processes on 127.0.0.1 meeting through `dynmask orchestrator` train like two peers of
/// one process: node 0 logs the same batches and (one all-reduce of the same two shards) the
/// same losses within 1e-5; node 1 writes nothing but its config. Every wait is bounded.
#[test]
fn two_nodes_on_loopback_train_like_two_local_peers() {
    use std::time::Duration;
    let dir = temp_dir("nodes");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "pretrain".to_string(),
            text_config(),
            "--quick".into(),
            "--quiet".into(),
            "--arm".into(),
            "dynamic".into(),
            "--steps".into(),
            "12".into(),
            "--out-dir".into(),
            s(out).into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Command::new(env!("CARGO_BIN_EXE_dynmask"))
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut local = run(&dir.join("local"), &["--devices", "0,0"]);
    assert!(wait_bounded(&mut local, Duration::from_secs(300)));

    let port = free_port();
    let mut orchestrator = Command::new(env!("CARGO_BIN_EXE_dynmask"))
        .args(["orchestrator", "--port", &port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "no orchestrator");
        std::thread::sleep(Duration::from_millis(100));
    }
    let address = format!("ws://127.0.0.1:{port}");
    let nodes: Vec<_> = (0..2)
        .map(|r| {
            let data_port = free_port().to_string();
            let rank = r.to_string();
            run(
                &dir.join(format!("node-{r}")),
                &[
                    "--nodes",
                    "2",
                    "--node-rank",
                    &rank,
                    "--orchestrator",
                    &address,
                    "--data-port",
                    &data_port,
                ],
            )
        })
        .collect();
    let mut ok = vec![];
    let mut errors = vec![];
    for mut node in nodes {
        ok.push(wait_bounded(&mut node, Duration::from_secs(300)));
        let mut err = String::new();
        use std::io::Read;
        node.stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        errors.push(err);
    }
    let _ = orchestrator.kill();
    let _ = orchestrator.wait();
    assert!(ok.iter().all(|&o| o), "{errors:?}");
    let (a, b) = (
        step_records(&run_dir(&dir.join("local"), "dynamic")),
        step_records(&run_dir(&dir.join("node-0"), "dynamic")),
    );
    assert_eq!(a.len(), 12);
    assert_eq!(b.len(), 12);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["digest"], y["digest"]);
        let (p, q) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!(
            (p - q).abs() <= 1e-5 * p.abs(),
            "step {}: {p} vs {q}",
            x["step"]
        );
    }
    let node1 = run_dir(&dir.join("node-1"), "dynamic");
    assert!(
        !node1.join("checkpoints").exists()
            || std::fs::read_dir(node1.join("checkpoints"))
                .unwrap()
                .count()
                == 0
    );
    assert!(!node1.join("log.jsonl").exists() || step_records(&node1).is_empty());
    std::fs::remove_dir_all(&dir).ok();
}
