//! The gradient-surgery conflict heatmap: one cell per layer (rows) and module type (columns:
//! attention, mlp, norm), coloured by how often the domains' gradients conflicted there over the
//! run (the mean of `surgery/conflict_frac/layer.<i>/<type>` over the logged steps). Where MGS
//! finds conflicts is the question its paper asks; this is the picture that answers it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::MetricsError;
use super::plot::{FONT, render_png};

/// File name under `plots/`.
pub const HEATMAP_FILE: &str = "surgery_conflicts.png";

/// The module types of a layer, in column order.
pub const MODULE_TYPES: [&str; 3] = ["attention", "mlp", "norm"];

const PREFIX: &str = "surgery/conflict_frac/layer.";

/// Mean conflict fraction per (layer, module type) over the finite logged values; `None` for a
/// cell never logged. Rows are the layers found, ascending.
pub fn conflict_grid(
    history: &BTreeMap<String, Vec<(u64, f64)>>,
) -> Vec<(usize, [Option<f64>; 3])> {
    let mut grid: BTreeMap<usize, [Option<f64>; 3]> = BTreeMap::new();
    for (key, points) in history {
        let Some((layer, kind)) = key.strip_prefix(PREFIX).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let (Ok(layer), Some(col)) = (
            layer.parse::<usize>(),
            MODULE_TYPES.iter().position(|t| *t == kind),
        ) else {
            continue;
        };
        let finite: Vec<f64> = points
            .iter()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .collect();
        if !finite.is_empty() {
            grid.entry(layer).or_default()[col] =
                Some(finite.iter().sum::<f64>() / finite.len() as f64);
        }
    }
    grid.into_iter().collect()
}

/// White (no conflict) to dark red (always in conflict).
fn colour(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let fade = |full: f64| (255.0 - (255.0 - full) * v).round() as u8;
    RGBColor(fade(165.0), fade(0.0), fade(38.0))
}

/// Draws the heatmap into `plots_dir`; `Ok(None)` while no layer-level conflict was logged.
pub fn plot_conflict_heatmap(
    plots_dir: &Path,
    history: &BTreeMap<String, Vec<(u64, f64)>>,
) -> Result<Option<PathBuf>, MetricsError> {
    let grid = conflict_grid(history);
    if grid.is_empty() {
        return Ok(None);
    }
    let path = plots_dir.join(HEATMAP_FILE);
    let rows = grid.len();
    let size = (640, (120 + 28 * rows as u32).max(240));
    render_png(&path, size, |root| {
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        // Cell (col, row) covers [col, col + 1) x [row, row + 1). The axes carry no ticks; each
        // column and row is labelled at its centre below.
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Gradient conflicts between domains (fraction of steps)",
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..MODULE_TYPES.len() as f64, 0f64..rows as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(err)?;
        let label = |text: String, at: (f64, f64), h: HPos, dx: i32, dy: i32| {
            let (px, py) = chart.backend_coord(&at);
            let style = (FONT, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(h, VPos::Center));
            root.draw(&Text::new(text, (px + dx, py + dy), style))
                .map_err(|e| e.to_string())
        };
        for (col, name) in MODULE_TYPES.iter().enumerate() {
            label(
                name.to_string(),
                (col as f64 + 0.5, 0.0),
                HPos::Center,
                0,
                14,
            )?;
        }
        for (row, (layer, _)) in grid.iter().enumerate() {
            label(
                format!("layer {layer}"),
                (0.0, row as f64 + 0.5),
                HPos::Right,
                -8,
                0,
            )?;
        }
        for (row, (_, cells)) in grid.iter().enumerate() {
            for (col, cell) in cells.iter().enumerate() {
                let (x, y) = (col as f64, row as f64);
                let fill = cell.map_or(RGBColor(230, 230, 230), colour);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + 1.0, y + 1.0)],
                        fill.filled(),
                    )))
                    .map_err(err)?;
                if let Some(v) = cell {
                    let ink = if *v > 0.6 { WHITE } else { BLACK };
                    let style = (FONT, 12)
                        .into_font()
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    chart
                        .draw_series(std::iter::once(Text::new(
                            format!("{v:.2}"),
                            (x + 0.5, y + 0.5),
                            style,
                        )))
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_averages_each_cell_over_the_run() {
        let mut h: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        h.insert(
            "surgery/conflict_frac/layer.1/mlp".into(),
            vec![(1, 0.0), (2, 1.0), (3, f64::NAN)],
        );
        h.insert(
            "surgery/conflict_frac/layer.0/attention".into(),
            vec![(1, 0.25)],
        );
        h.insert("surgery/conflict_frac/embed".into(), vec![(1, 1.0)]);
        h.insert("surgery/conflict_frac/layer.x/mlp".into(), vec![(1, 1.0)]);
        h.insert("reward/mean".into(), vec![(1, 0.5)]);
        let grid = conflict_grid(&h);
        assert_eq!(
            grid,
            vec![(0, [Some(0.25), None, None]), (1, [None, Some(0.5), None]),]
        );
        assert_eq!(colour(0.0), RGBColor(255, 255, 255));
        assert_eq!(colour(1.0), RGBColor(165, 0, 38));
        let dir = tempfile::tempdir().unwrap();
        let path = plot_conflict_heatmap(dir.path(), &h).unwrap().unwrap();
        crate::metrics::plot::tests::assert_real_png(&path, (640, 240));
        // Nothing logged at layer level: nothing drawn.
        let empty = BTreeMap::new();
        assert!(plot_conflict_heatmap(dir.path(), &empty).unwrap().is_none());
    }
}
