//! Learning curves as SVG (plotters): panels of named curves, nothing study-specific.

use std::path::Path;

use plotters::prelude::*;

use super::{Result, StudyError};

/// One line: a name and its `(x, y)` points (non-finite `y` are skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend entry.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// One chart of curves.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines.
    pub curves: Vec<Curve>,
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> StudyError {
    StudyError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Draws `panels` side by side into an SVG at `path`.
pub fn plot_panels(path: &Path, panels: &[Panel]) -> Result<()> {
    let width = 550 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let pts = || {
            panel
                .curves
                .iter()
                .flat_map(|c| c.points.iter().copied())
                .filter(|p| p.0.is_finite() && p.1.is_finite())
        };
        let range = |v: Vec<f64>, pad: f64| {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
            if lo < hi {
                (lo - pad * (hi - lo), hi + pad * (hi - lo))
            } else if lo == hi {
                (lo - 0.5, hi + 0.5)
            } else {
                (0.0, 1.0)
            }
        };
        let (x0, x1) = range(pts().map(|p| p.0).collect(), 0.0);
        let (y0, y1) = range(pts().map(|p| p.1).collect(), 0.05);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, c) in panel.curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    c.points
                        .iter()
                        .copied()
                        .filter(|p| p.0.is_finite() && p.1.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?
                .label(c.name.clone())
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

/// One curve per arm: the pointwise mean over the arm's runs of `curve(run)` (arms without runs
/// are skipped; a name says how many seeds it averages).
pub fn arm_curves<R>(
    arms: &[&str],
    runs: &[R],
    arm_of: impl Fn(&R) -> &str,
    curve: impl Fn(&R) -> Vec<(f64, f64)>,
) -> Vec<Curve> {
    arms.iter()
        .filter_map(|&arm| {
            let curves: Vec<Vec<(f64, f64)>> = runs
                .iter()
                .filter(|r| arm_of(r) == arm)
                .map(&curve)
                .collect();
            let name = match curves.len() {
                0 => return None,
                1 => arm.to_string(),
                n => format!("{arm} (mean of {n})"),
            };
            Some(Curve {
                name,
                points: mean_curve(&curves),
            })
        })
        .collect()
}

/// Moving average over the last `window` finite values, as `(i + 1, mean)`.
pub fn smoothed(values: &[f64], window: usize) -> Vec<(f64, f64)> {
    (0..values.len())
        .map(|i| {
            let lo = (i + 1).saturating_sub(window.max(1));
            let w: Vec<f64> = values[lo..=i]
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
pub fn mean_curve(curves: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
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
        let s = smoothed(&[2.0, f64::NAN, 4.0], 16);
        assert_eq!(s, vec![(1.0, 2.0), (2.0, 2.0), (3.0, 3.0)]);
        let s = smoothed(&[1.0, 3.0, 5.0], 2);
        assert_eq!(s, vec![(1.0, 1.0), (2.0, 2.0), (3.0, 4.0)]);
    }

    #[test]
    fn panels_render_to_svg() {
        let dir = std::env::temp_dir().join(format!("dynmask-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let panel = Panel {
            title: "t".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            curves: vec![Curve {
                name: "dynamic".into(),
                points: vec![(0.0, 2.0), (1.0, 1.0)],
            }],
        };
        plot_panels(&path, &[panel.clone(), panel]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("dynamic"),
            "{}",
            &svg[..80]
        );
    }
}
