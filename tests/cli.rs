//! The `dynmask` binary: clear errors for wrong paths, malformed configs, empty corpora and
//! unknown arms; and a quick pretrain -> resume -> eval -> finetune chain through checkpoints.

use std::path::PathBuf;
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

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/configs/static_vs_dynamic.toml"
);

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let (ok, _, err) = dynmask(&["compare", "/nonexistent/study.toml"]);
    assert!(!ok);
    assert!(
        err.contains("i/o error on `/nonexistent/study.toml`"),
        "{err}"
    );

    let dir = temp_dir("bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[train]\nsteps = \"many\"\n").unwrap();
    let (ok, _, err) = dynmask(&["compare", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("a valid study TOML") && err.contains("steps"),
        "{err}"
    );

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let with_corpus = dir.join("corpus.toml");
    let text = std::fs::read_to_string(CONFIG).unwrap().replace(
        "seeds = [0]",
        &format!("seeds = [0]\ncorpus = \"{}\"", empty.display()),
    );
    std::fs::write(&with_corpus, text).unwrap();
    let (ok, _, err) = dynmask(&[
        "compare",
        with_corpus.to_str().unwrap(),
        "--out-dir",
        dir.join("o").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("is empty (no non-blank documents)"), "{err}");

    let (ok, _, err) = dynmask(&[
        "pretrain",
        CONFIG,
        "--quick",
        "--arm",
        "sometimes",
        "--out-dir",
        dir.join("p").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("`arm` = sometimes") && err.contains("static k=1, static k=4, dynamic"),
        "{err}"
    );

    let (ok, _, err) = dynmask(&["compare", CONFIG, "--backend", "tpu"]);
    assert!(!ok);
    assert!(err.contains("invalid value 'tpu'"), "{err}");
}

#[test]
fn pretrain_resume_eval_finetune_through_checkpoints() {
    let dir = temp_dir("chain");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    let common = ["--quick", "--out-dir", out];
    let ckpts = dir.join("run").join("checkpoints");

    let mut args = vec![
        "pretrain",
        CONFIG,
        "--arm",
        "dynamic",
        "--checkpoint-every",
        "32",
        "--keep-last",
        "2",
        "--steps",
        "64",
    ];
    args.extend(common);
    let (ok, stdout, err) = dynmask(&args);
    assert!(ok, "{err}");
    assert!(stdout.contains("held-out mlm_loss"), "{stdout}");
    let mut files: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["ckpt-00000032.dynmask", "ckpt-00000064.dynmask"]
    );

    // Resuming from step 32 of the same 64-step run continues it.
    let resume = ckpts.join("ckpt-00000032.dynmask");
    let mut args = vec![
        "pretrain",
        CONFIG,
        "--arm",
        "dynamic",
        "--checkpoint-every",
        "32",
        "--steps",
        "64",
        "--resume",
        resume.to_str().unwrap(),
    ];
    args.extend(common);
    let (ok, _, err) = dynmask(&args);
    assert!(ok, "{err}");

    // A different run length is refused by name.
    let mut args = vec![
        "pretrain",
        CONFIG,
        "--arm",
        "dynamic",
        "--steps",
        "80",
        "--resume",
        resume.to_str().unwrap(),
    ];
    args.extend(common);
    let (ok, _, err) = dynmask(&args);
    assert!(!ok);
    assert!(
        err.contains("`train.steps` is 64 in the checkpoint but 80"),
        "{err}"
    );

    let last = ckpts.join("ckpt-00000064.dynmask");
    let mut args = vec!["eval", CONFIG, "--checkpoint", last.to_str().unwrap()];
    args.extend(common);
    let (ok, stdout, err) = dynmask(&args);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("mlm_loss "), "{stdout}");

    let mut args = vec!["finetune", CONFIG, "--checkpoint", last.to_str().unwrap()];
    args.extend(common);
    let (ok, stdout, err) = dynmask(&args);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("accuracy") && stdout.contains("F1"),
        "{stdout}"
    );
}

#[test]
fn plot_redraws_a_finished_study_and_refuses_other_files() {
    let dir = temp_dir("plot");
    let out = dir.join("study");
    let (ok, _, err) = dynmask(&[
        "compare",
        CONFIG,
        "--quick",
        "--steps",
        "8",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let svg = dir.join("again.svg");
    let results = out.join("results.json");
    let (ok, stdout, err) = dynmask(&[
        "plot",
        results.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(stdout.matches("| static k=").count(), 2, "{stdout}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("dynamic"),
        "{text:.200}"
    );

    let (ok, _, err) = dynmask(&["plot", CONFIG]);
    assert!(!ok);
    assert!(err.contains("a study's results.json"), "{err}");
}
