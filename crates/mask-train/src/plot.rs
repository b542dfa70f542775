//! Learning curves as SVG (plotters): held-out MLM loss (fixed evaluation mask) and training
//! loss (moving average over 16 steps) against steps, one line per arm (mean over its seeds).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, TrainError};
use crate::experiment::StudyResults;

fn plot_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Writes `curves.svg`-style plots of a study to `path`.
pub fn plot_study(results: &StudyResults, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (left, right) = root.split_horizontally(550);
    let max_step = results
        .runs
        .iter()
        .flat_map(|r| r.history.last().map(|h| h.step + 1))
        .max()
        .unwrap_or(1) as f64;

    // (series name, points) for each panel: one line per arm, the pointwise mean over its seeds
    // (with 11 arms x 3 seeds, one line per run is unreadable).
    let mut eval: Vec<(String, Vec<(f64, f64)>)> = vec![];
    let mut train: Vec<(String, Vec<(f64, f64)>)> = vec![];
    for arm in &results.config.arms {
        let runs: Vec<_> = results.runs.iter().filter(|r| r.arm == arm.name).collect();
        if runs.is_empty() {
            continue;
        }
        let name = if runs.len() > 1 {
            format!("{} (mean of {})", arm.name, runs.len())
        } else {
            arm.name.clone()
        };
        let curves: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|r| {
                r.evals
                    .iter()
                    .map(|e| (e.step as f64, e.mlm_loss))
                    .collect()
            })
            .collect();
        eval.push((name.clone(), mean_curve(&curves)));
        let curves: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|r| smoothed(&r.history.iter().map(|h| h.loss).collect::<Vec<_>>()))
            .collect();
        train.push((name, mean_curve(&curves)));
    }

    for (area, title, series) in [
        (&left, "held-out MLM loss (fixed mask)", &eval),
        (&right, "training MLM loss (16-step mean)", &train),
    ] {
        let ys: Vec<f64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .filter(|y| y.is_finite())
            .collect();
        let (lo, hi) = ys
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
        let (lo, hi) = if lo < hi {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..max_step, lo..hi)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (nats)")
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    pts.iter().copied().filter(|p| p.1.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// Moving average over the last 16 finite values, as `(step + 1, mean)`.
fn smoothed(losses: &[f64]) -> Vec<(f64, f64)> {
    (0..losses.len())
        .map(|i| {
            let lo = i.saturating_sub(15);
            let w: Vec<f64> = losses[lo..=i]
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            (
                i as f64 + 1.0,
                w.iter().sum::<f64>() / w.len().max(1) as f64,
            )
        })
        .collect()
}

/// Pointwise mean of curves sampled at the same x positions (truncated to the shortest, as an
/// early-stopped run is shorter).
fn mean_curve(curves: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let n = curves.iter().map(Vec::len).min().unwrap_or(0);
    (0..n)
        .map(|i| {
            let y = curves.iter().map(|c| c[i].1).sum::<f64>() / curves.len() as f64;
            (curves[0][i].0, y)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_curve_averages_pointwise_and_truncates() {
        let a = vec![(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)];
        let b = vec![(0.0, 3.0), (1.0, 5.0)];
        assert_eq!(mean_curve(&[a, b]), vec![(0.0, 2.0), (1.0, 4.0)]);
        let s = smoothed(&[2.0, f64::NAN, 4.0]);
        assert_eq!(s, vec![(1.0, 2.0), (2.0, 2.0), (3.0, 3.0)]);
    }
}
