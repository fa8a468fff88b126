//! PNG plots of a run, redrawn as training goes: loss and learning rate by step
//! (`loss_lr.png`), train and validation accuracy by epoch (`accuracy.png`), and the validation
//! confusion matrix (`confusion.png`, rows = true class, normalised per row).
//! Drawn with plotters into an RGB buffer and written as PNG by `image`, atomically; text uses
//! the embedded DejaVu Sans (train/assets, Bitstream Vera licence beside it), so no system font
//! is needed.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use tubelet::{Error, Result};

use crate::metrics::Tally;
use crate::runlog::write_atomic;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The embedded file is a valid TTF; a failure here would show as missing text only.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn perr<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Io(format!("plot {what}: {e:?}"))
}

/// Draws with `draw` on a w×h white canvas and writes it to `path` as PNG.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(perr("fill"))?;
        draw(&root)?;
        root.present().map_err(perr("present"))?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &buf,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::Io(format!("{}: PNG encoding: {e}", path.display())))?;
    write_atomic(path, &png)
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-12);
    (lo - pad, hi + pad)
}

/// Loss (raw and smoothed) over steps above, learning rate below. `points`: (step, loss, lr).
pub fn loss_and_lr(path: &Path, points: &[(u64, f64, f64)]) -> Result<()> {
    render(path, (900, 640), |root| {
        let (top, bottom) = root.split_vertically(400);
        let xmax = points.last().map_or(1, |p| p.0).max(1) as f64;
        let (lo, hi) = range(points.iter().map(|p| p.1));
        let mut c = ChartBuilder::on(&top)
            .caption("training loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, lo.max(0.0).min(lo)..hi)
            .map_err(perr("loss axes"))?;
        c.configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(perr("loss mesh"))?;
        let raw: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|p| (p.0 as f64, p.1))
            .collect();
        c.draw_series(LineSeries::new(raw.clone(), RGBColor(170, 190, 230)))
            .map_err(perr("loss"))?
            .label("loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(170, 190, 230)));
        let mut ema = None::<f64>;
        let smooth: Vec<(f64, f64)> = raw
            .iter()
            .map(|&(x, v)| {
                let e = ema.map_or(v, |e| 0.9 * e + 0.1 * v);
                ema = Some(e);
                (x, e)
            })
            .collect();
        c.draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))
            .map_err(perr("loss ema"))?
            .label("loss (EMA 0.9)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(perr("legend"))?;

        let (_, lhi) = range(points.iter().map(|p| p.2));
        let mut c = ChartBuilder::on(&bottom)
            .caption("learning rate", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..lhi.max(1e-12))
            .map_err(perr("lr axes"))?;
        c.configure_mesh()
            .x_desc("step")
            .y_desc("lr")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .draw()
            .map_err(perr("lr mesh"))?;
        c.draw_series(LineSeries::new(
            points.iter().map(|p| (p.0 as f64, p.2)),
            RED.stroke_width(2),
        ))
        .map_err(perr("lr"))?;
        Ok(())
    })
}

/// One row of the accuracy plot: (epoch, train top-1, val top-1, val top-5).
pub type AccuracyRow = (usize, Option<f64>, Option<f64>, Option<f64>);

/// Accuracy by epoch: train top-1 (of the training batches), validation top-1 and top-5.
/// `rows`: (epoch, train top-1, val top-1, val top-5), fractions in [0, 1].
pub fn accuracy(path: &Path, rows: &[AccuracyRow]) -> Result<()> {
    render(path, (900, 480), |root| {
        let xmax = rows.last().map_or(1, |r| r.0).max(1) as f64;
        let mut c = ChartBuilder::on(root)
            .caption("accuracy by epoch", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax + 0.5, 0f64..100f64)
            .map_err(perr("accuracy axes"))?;
        c.configure_mesh()
            .x_desc("epoch")
            .y_desc("%")
            .draw()
            .map_err(perr("accuracy mesh"))?;
        type Series<'a> = (&'a str, RGBColor, fn(&AccuracyRow) -> Option<f64>);
        let series: [Series; 3] = [
            ("train top-1", RGBColor(40, 120, 200), |r| r.1),
            ("val top-1", RGBColor(210, 60, 40), |r| r.2),
            ("val top-5", RGBColor(240, 160, 40), |r| r.3),
        ];
        for (name, color, get) in series {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|r| get(r).map(|v| (r.0 as f64, 100.0 * v)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(perr(name))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(perr(name))?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(perr("legend"))?;
        Ok(())
    })
}

/// The confusion matrix of `tally`, each row normalised by its count; counts written in the cells
/// when there are at most 20 classes, class names on the axes when given and at most 40.
pub fn confusion(path: &Path, tally: &Tally, names: Option<&[String]>) -> Result<()> {
    let n = tally.classes.max(1);
    let side = (n as u32 * 40).clamp(480, 1400);
    render(path, (side + 160, side + 120), |root| {
        let mut c = ChartBuilder::on(root)
            .caption(
                format!(
                    "confusion matrix ({} videos, top-1 {:.1}%)",
                    tally.count,
                    100.0 * tally.top1()
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(110)
            .build_cartesian_2d(0f64..n as f64, 0f64..n as f64)
            .map_err(perr("confusion axes"))?;
        let label = |v: &f64| {
            let k = v.floor() as usize;
            if (v - v.floor() - 0.5).abs() > 1e-6 || k >= n {
                return String::new();
            }
            match names {
                Some(ns) if n <= 40 => ns.get(k).cloned().unwrap_or_else(|| k.to_string()),
                _ => k.to_string(),
            }
        };
        let ticks = n.min(40);
        c.configure_mesh()
            .disable_mesh()
            .x_labels(ticks * 2 + 1)
            .y_labels(ticks * 2 + 1)
            .x_label_formatter(&|v| label(v))
            .y_label_formatter(&|v| label(&(n as f64 - v)))
            .x_desc("predicted")
            .y_desc("true")
            .draw()
            .map_err(perr("confusion mesh"))?;
        let per_class = tally.per_class();
        let mut cells = Vec::with_capacity(n * n);
        for y in 0..n {
            let total = per_class[y].0.max(1) as f64;
            for x in 0..n {
                let count = tally.confusion[y * n + x];
                let f = count as f64 / total;
                let shade = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
                let color = RGBColor(shade(255, 20), shade(255, 70), shade(255, 160));
                // Row 0 at the top.
                let (x0, y0) = (x as f64, (n - 1 - y) as f64);
                cells.push(Rectangle::new(
                    [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                    color.filled(),
                ));
            }
        }
        c.draw_series(cells).map_err(perr("cells"))?;
        if n <= 20 {
            let mut texts = Vec::new();
            for y in 0..n {
                let total = per_class[y].0.max(1) as f64;
                for x in 0..n {
                    let count = tally.confusion[y * n + x];
                    if count == 0 {
                        continue;
                    }
                    let dark = count as f64 / total > 0.5;
                    let style =
                        ("sans-serif", 14)
                            .into_font()
                            .color(if dark { &WHITE } else { &BLACK });
                    texts.push(Text::new(
                        count.to_string(),
                        (x as f64 + 0.35, (n - y) as f64 - 0.35),
                        style,
                    ));
                }
            }
            c.draw_series(texts).map_err(perr("counts"))?;
        }
        Ok(())
    })
}
