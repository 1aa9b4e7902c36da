//! Markdown + SVG report over DNO iterations.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

use crate::EvalSummary;

/// What [`render_report`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    /// `<out_dir>/report.md`
    pub markdown_path: PathBuf,
    /// `<out_dir>/winrate.svg`
    pub svg_path: PathBuf,
    /// The markdown that was written, so the CLI can print it.
    pub markdown: String,
}

const MD_NAME: &str = "report.md";
const SVG_NAME: &str = "winrate.svg";

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map(pct).unwrap_or_else(|| "–".to_string())
}

/// Labels go into table cells: escape backslashes, pipes and angle brackets; no newlines.
fn md_cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "\\<")
        .replace('>', "\\>")
        .replace(['\n', '\r'], " ")
}

fn check_finite(label: &str, s: &EvalSummary) -> Result<()> {
    let fields = [
        ("win_rate", s.win_rate),
        ("win_rate_se", s.win_rate_se),
        ("ci_low", s.ci_low),
        ("ci_high", s.ci_high),
        ("lc_win_rate", s.lc_win_rate),
        ("mean_len_candidate", s.mean_len_candidate),
        ("mean_len_baseline", s.mean_len_baseline),
    ];
    for (name, v) in fields {
        if !v.is_finite() {
            bail!("iteration {label:?}: summary field {name} is not finite ({v})");
        }
    }
    Ok(())
}

/// Build the markdown text (also used by [`render_report`]).
pub fn render_markdown(iters: &[(String, EvalSummary)]) -> String {
    let mut md = String::new();
    let level = iters.first().map(|(_, s)| s.ci_level).unwrap_or(0.95);
    let _ = writeln!(md, "# DNO evaluation report\n");
    let _ = writeln!(
        md,
        "Win-rate = mean P(candidate preferred over the baseline), ties count ½, each prompt weighted \
         equally; ± is the prompt-clustered standard error; the CI is a {:.0}% percentile bootstrap \
         over prompts. LC = length-controlled win-rate: σ(intercept) of a logistic fit of the preference \
         on tanh(Δlen / std Δlen) (AlpacaEval-2 style, without the per-instruction difficulty term). \
         First-pos = how often the judge prefers the response shown first (50% = no position bias).\n",
        100.0 * level
    );
    let _ = writeln!(
        md,
        "| Iteration | Win-rate % | {:.0}% CI | LC % | Mean len cand | Mean len base | Acc cand % | Acc base % | First-pos % | W / T / L | Prompts | n |",
        100.0 * level
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, s) in iters {
        let _ = writeln!(
            md,
            "| {} | {} ± {} | [{}, {}] | {} | {:.0} | {:.0} | {} | {} | {} | {} / {} / {} | {} | {} |",
            md_cell(label),
            pct(s.win_rate),
            pct(s.win_rate_se),
            pct(s.ci_low),
            pct(s.ci_high),
            pct(s.lc_win_rate),
            s.mean_len_candidate,
            s.mean_len_baseline,
            opt_pct(s.accuracy_candidate),
            opt_pct(s.accuracy_baseline),
            opt_pct(s.first_position_win_rate),
            s.wins,
            s.ties,
            s.losses,
            s.n_prompts,
            s.n,
        );
    }
    let mut warnings = Vec::new();
    for (label, s) in iters {
        if let Some(w) = &s.lc_warning {
            warnings.push(format!("- **{}**: {}", md_cell(label), w));
        }
        for note in &s.notes {
            warnings.push(format!("- **{}**: {}", md_cell(label), note));
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(md, "\n## Warnings\n");
        for w in warnings {
            let _ = writeln!(md, "{w}");
        }
    }
    let _ = writeln!(
        md,
        "\n![Win-rate and response length by iteration]({SVG_NAME})"
    );
    md
}

/// Write `report.md` and `winrate.svg` into `out_dir` (created if missing) for a sequence of
/// `(iteration label, summary)` pairs, in display order.
pub fn render_report(iters: &[(String, EvalSummary)], out_dir: &Path) -> Result<ReportFiles> {
    if iters.is_empty() {
        bail!("render_report: no iterations to report");
    }
    for (label, s) in iters {
        check_finite(label, s)?;
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating report directory {}", out_dir.display()))?;

    let markdown = render_markdown(iters);
    let markdown_path = out_dir.join(MD_NAME);
    std::fs::write(&markdown_path, &markdown)
        .with_context(|| format!("writing {}", markdown_path.display()))?;

    let svg = render_svg(iters)?;
    let svg_path = out_dir.join(SVG_NAME);
    std::fs::write(&svg_path, svg).with_context(|| format!("writing {}", svg_path.display()))?;

    Ok(ReportFiles {
        markdown_path,
        svg_path,
        markdown,
    })
}

/// Padded y-range in percent for the win-rate panel, clamped to [0, 100], at least 10 points tall.
fn winrate_range(iters: &[(String, EvalSummary)]) -> (f64, f64) {
    let vals = iters
        .iter()
        .flat_map(|(_, s)| [s.ci_low, s.ci_high, s.win_rate, s.lc_win_rate])
        .map(|v| 100.0 * v);
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    lo -= 5.0;
    hi += 5.0;
    if hi - lo < 10.0 {
        let mid = 0.5 * (lo + hi);
        lo = mid - 5.0;
        hi = mid + 5.0;
    }
    (lo.max(0.0), hi.min(100.0))
}

/// x axis for iterations: index i sits at x = i on [-0.5, k - 0.5]; ticks only at the indices
/// (thinned when there are more than plotters asks for).
struct IterationAxis {
    k: usize,
}

impl Ranged for IterationAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let frac = (v + 0.5) / self.k.max(1) as f64;
        limit.0 + (frac * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let max = hint.max_num_points().max(1);
        let step = self.k.div_ceil(max).max(1);
        (0..self.k).step_by(step).map(|i| i as f64).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.5..(self.k as f64 - 0.5)
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing {SVG_NAME}: {e:?}")
}

/// Render the two-panel figure to an SVG string.
pub fn render_svg(iters: &[(String, EvalSummary)]) -> Result<String> {
    // x: iteration index i at x = i, labelled with the iteration's label; ticks only there.
    let k = iters.len();
    let labels: Vec<String> = iters.iter().map(|(l, _)| l.clone()).collect();
    let x_range = || IterationAxis { k };
    let x_fmt = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    let at = |i: usize| i as f64;
    let y_fmt = |v: &f64| format!("{v:.0}");

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 760)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((2, 1));

        // Panel 1: win-rate with CI band, LC line, 50% reference.
        let (ylo, yhi) = winrate_range(iters);
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("Win-rate vs baseline (%)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(x_range(), ylo..yhi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("win-rate %")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(BLACK.mix(0.03))
            .draw()
            .map_err(plot_err)?;

        let blue = RGBColor(31, 119, 180);
        let red = RGBColor(214, 39, 40);
        let band: Vec<(f64, f64)> = iters
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (at(i), 100.0 * s.ci_high))
            .chain(
                iters
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, (_, s))| (at(i), 100.0 * s.ci_low)),
            )
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(band, blue.mix(0.18).filled())))
            .map_err(plot_err)?
            .label("CI")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], blue.mix(0.18).filled())
            });
        // CI whiskers (also visible when there is a single iteration).
        chart
            .draw_series(iters.iter().enumerate().map(|(i, (_, s))| {
                PathElement::new(
                    vec![(at(i), 100.0 * s.ci_low), (at(i), 100.0 * s.ci_high)],
                    blue.mix(0.6),
                )
            }))
            .map_err(plot_err)?;
        if (ylo..=yhi).contains(&50.0) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(-0.5, 50.0), (k as f64 - 0.5, 50.0)],
                    BLACK.mix(0.3),
                )))
                .map_err(plot_err)?;
        }
        chart
            .draw_series(LineSeries::new(
                iters
                    .iter()
                    .enumerate()
                    .map(|(i, (_, s))| (at(i), 100.0 * s.win_rate)),
                blue.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("win-rate")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        chart
            .draw_series(
                iters
                    .iter()
                    .enumerate()
                    .map(|(i, (_, s))| Circle::new((at(i), 100.0 * s.win_rate), 4, blue.filled())),
            )
            .map_err(plot_err)?;
        chart
            .draw_series(DashedLineSeries::new(
                iters
                    .iter()
                    .enumerate()
                    .map(|(i, (_, s))| (at(i), 100.0 * s.lc_win_rate)),
                8,
                5,
                red.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("LC win-rate")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
        chart
            .draw_series(
                iters.iter().enumerate().map(|(i, (_, s))| {
                    Circle::new((at(i), 100.0 * s.lc_win_rate), 3, red.filled())
                }),
            )
            .map_err(plot_err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(plot_err)?;

        // Panel 2: mean response length.
        let max_len = iters
            .iter()
            .map(|(_, s)| s.mean_len_candidate.max(s.mean_len_baseline))
            .fold(0.0f64, f64::max);
        let ymax = if max_len > 0.0 { 1.12 * max_len } else { 1.0 };
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("Mean response length (characters)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(x_range(), 0.0..ymax)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("characters")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(BLACK.mix(0.03))
            .draw()
            .map_err(plot_err)?;
        let gray = RGBColor(110, 110, 110);
        chart
            .draw_series(LineSeries::new(
                iters
                    .iter()
                    .enumerate()
                    .map(|(i, (_, s))| (at(i), s.mean_len_candidate)),
                blue.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("candidate")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                iters
                    .iter()
                    .enumerate()
                    .map(|(i, (_, s))| (at(i), s.mean_len_baseline)),
                gray.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("baseline")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], gray.stroke_width(2))
            });
        chart
            .draw_series(iters.iter().enumerate().flat_map(|(i, (_, s))| {
                [
                    Circle::new((at(i), s.mean_len_candidate), 4, blue.filled()),
                    Circle::new((at(i), s.mean_len_baseline), 4, gray.filled()),
                ]
            }))
            .map_err(plot_err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(plot_err)?;

        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
