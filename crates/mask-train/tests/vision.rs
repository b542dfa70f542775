//! Masked image modelling: IDX reader errors, and an end-to-end smoke run of the MAE study
//! (static vs dynamic patch masking, reconstruction, linear probe, report and PNG grid).

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use mask_train::vision::{
    fashion_mnist_subset, read_idx_images, read_idx_labels, run_mae_study, IdxError, ImageSet,
    MaeStudyConfig,
};
use mask_train::TrainError;

type B = Autodiff<NdArray<f32>>;

/// NdArray's RNG is process-global: training tests hold this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mask-vision-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn idx_images(count: u32, rows: u32, cols: u32, pixels: usize) -> Vec<u8> {
    let mut b = vec![];
    for v in [0x0803, count, rows, cols] {
        b.extend(u32::to_be_bytes(v));
    }
    b.extend((0..pixels).map(|i| (i % 251) as u8));
    b
}

fn idx_labels(count: u32, labels: &[u8]) -> Vec<u8> {
    let mut b = vec![];
    for v in [0x0801, count] {
        b.extend(u32::to_be_bytes(v));
    }
    b.extend(labels);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_files_are_read_raw_or_gzipped() {
    let dir = temp_dir("ok");
    let raw = idx_images(3, 2, 5, 30);
    let a = read_idx_images(&write(&dir, "a", &raw)).unwrap();
    let b = read_idx_images(&write(&dir, "b.gz", &gzip(&raw))).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.count, a.rows, a.cols), (3, 2, 5));
    assert_eq!(a.image(2), &raw[16 + 20..16 + 30]);
    let labels = read_idx_labels(&write(&dir, "l.gz", &gzip(&idx_labels(3, &[1, 2, 9])))).unwrap();
    assert_eq!(labels, vec![1, 2, 9]);
    let set = ImageSet::new(a, labels).unwrap();
    assert_eq!(set.take(2).len(), 2);
    assert_eq!(set.take(2).images.pixels.len(), 20);
}

#[test]
fn malformed_idx_files_give_typed_errors() {
    let dir = temp_dir("bad");
    // Labels given where images are expected.
    let e = read_idx_images(&write(&dir, "swap", &idx_labels(2, &[0, 1]))).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Idx(IdxError::BadMagic {
                got: 0x0801,
                expected: 0x0803,
                ..
            }) | TrainError::Idx(IdxError::Truncated { .. })
        ),
        "{e}"
    );
    let mut bad = idx_images(1, 2, 2, 4);
    bad[3] = 0x99;
    let e = read_idx_images(&write(&dir, "magic", &bad)).unwrap_err();
    assert!(
        matches!(e, TrainError::Idx(IdxError::BadMagic { got: 0x0899, .. })),
        "{e}"
    );
    assert!(e.to_string().contains("magic"), "{e}");
    let e = read_idx_images(&write(&dir, "dims", &idx_images(1, 0, 28, 0))).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Idx(IdxError::BadDims {
                rows: 0,
                cols: 28,
                ..
            })
        ),
        "{e}"
    );
    let e = read_idx_images(&write(&dir, "short", &idx_images(2, 28, 28, 784 + 10))).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Idx(IdxError::Truncated {
                expected: 1568,
                got: 794,
                ..
            })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("short"), "names the file: {e}");
    let e = read_idx_images(&write(&dir, "header", &[0, 0, 8])).unwrap_err();
    assert!(
        matches!(e, TrainError::Idx(IdxError::Truncated { .. })),
        "{e}"
    );
    let e = read_idx_labels(&write(&dir, "lshort", &idx_labels(5, &[1, 2]))).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Idx(IdxError::Truncated {
                expected: 5,
                got: 2,
                ..
            })
        ),
        "{e}"
    );
    let e = read_idx_images(&write(&dir, "gz", &[0x1f, 0x8b, 1, 2, 3])).unwrap_err();
    assert!(matches!(e, TrainError::Idx(IdxError::Gzip { .. })), "{e}");
    let e = read_idx_images(&dir.join("missing")).unwrap_err();
    assert!(matches!(e, TrainError::Io { .. }), "{e}");
    let images = read_idx_images(&write(&dir, "i3", &idx_images(3, 2, 2, 12))).unwrap();
    let e = ImageSet::new(images, vec![0, 1]).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Idx(IdxError::CountMismatch {
                images: 3,
                labels: 2
            })
        ),
        "{e}"
    );
}

#[test]
fn mae_study_smoke_run_learns_and_writes_its_outputs() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (train, test) = fashion_mnist_subset().unwrap();
    let cfg = MaeStudyConfig {
        train_images: Some(256),
        test_images: Some(64),
        ..MaeStudyConfig::default()
    }
    .quick();
    let dir = temp_dir("study");
    let report = run_mae_study::<B>(&cfg, &train, &test, &dir, &Default::default()).unwrap();
    assert_eq!((report.train_images, report.test_images), (256, 64));
    assert_eq!(report.arms.len(), 2);
    for arm in &report.arms {
        for v in [
            arm.recon_mse,
            arm.recon_pixel_mse,
            arm.probe.accuracy,
            arm.probe.macro_f1,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{}: {v}", arm.name);
        }
        // Pretraining lowers the masked-patch loss, on training batches and on held-out images.
        let (first, last) = (arm.loss_curve[0].1, arm.loss_curve.last().unwrap().1);
        assert!(
            last < first,
            "{}: training loss {first} -> {last}",
            arm.name
        );
        assert!(
            arm.recon_mse < arm.recon_mse_initial,
            "{}: held-out MSE {} -> {}",
            arm.name,
            arm.recon_mse_initial,
            arm.recon_mse
        );
        assert!(arm.probe.accuracy > 0.1 && arm.probe.accuracy <= 1.0);
        assert!(arm.images_per_second > 0.0);
    }
    assert!(report.random_init_probe.accuracy.is_finite());
    // Files: report.json parses back, report.md has a row per encoder, the PNG decodes.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["arms"].as_array().unwrap().len(), 2);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("dynamic") && md.contains("static (k=1)") && md.contains("random init"));
    let png = std::fs::read(dir.join("mae_grid.png")).unwrap();
    let img = mask_train::vision::read_png_grey(&png).unwrap();
    // 4 images in columns; rows: original, masked, one per arm; 28 px x 3 + 2 px gutters.
    let cell = 28 * 3 + 2;
    assert_eq!((img.width, img.height), (4 * cell + 2, 4 * cell + 2));
    assert!(img.pixels.iter().any(|&p| p > 128) && img.pixels.iter().any(|&p| p < 64));
}

#[test]
fn study_config_round_trips_and_refuses_unknown_fields() {
    let cfg = MaeStudyConfig::default().quick();
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(toml::from_str::<MaeStudyConfig>(&text).unwrap(), cfg);
    let e = toml::from_str::<MaeStudyConfig>("stepz = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("stepz"), "{e}");
    let e = toml::from_str::<MaeStudyConfig>("selection = { type = \"grid\" }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("grid"), "{e}");
    let minimal: MaeStudyConfig = toml::from_str("steps = 7").unwrap();
    assert_eq!(minimal.steps, 7);
    assert_eq!(minimal.arms, MaeStudyConfig::default().arms);
    let (train, test) = fashion_mnist_subset().unwrap();
    let dir = temp_dir("cfg");
    let bad = MaeStudyConfig {
        batch_size: 0,
        ..MaeStudyConfig::default()
    };
    let e = run_mae_study::<B>(&bad, &train, &test, &dir, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("batch_size"), "{e}");
}
