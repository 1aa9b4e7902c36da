//! Markdown + SVG report over DNO runs and their iterations.
//!
//! The input is a list of [`ReportEntry`]s: one evaluated policy each, named by its run (e.g.
//! `dno-prct`, `offline-dpo`) and its iteration. The markdown has one table row per entry; the
//! SVG draws one series per run against x = iteration, each starting from π₁ (the baseline every
//! eval compares with) at iteration 0: win-rate 50% by definition, the baseline's accuracy and
//! length. A run with a single evaluated iteration (offline DPO, one round) is drawn as its own
//! marked series: a solid segment from π₁ to a large marker (dashed lines are kept for the
//! secondary metric of a panel: LC win-rate, loose accuracy).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::EvalSummary;

/// One evaluated policy: iteration `iteration` of run `run`, with its eval summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportEntry {
    /// The table row's label, e.g. `dno-prct/iter-2`.
    pub label: String,
    /// The series it belongs to (one line per run in the plot).
    pub run: String,
    /// x position in the plot (π₁ is iteration 0).
    pub iteration: u32,
    pub summary: EvalSummary,
}

impl ReportEntry {
    pub fn new(label: impl Into<String>, run: impl Into<String>, iteration: u32, summary: EvalSummary) -> ReportEntry {
        ReportEntry { label: label.into(), run: run.into(), iteration, summary }
    }
}

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
/// Labelled ticks per y axis (plotters picks 1, 2 or 5 × 10^k steps with at most this many).
const Y_LABELS: usize = 8;

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map(pct).unwrap_or_else(|| "–".to_string())
}

/// Labels go into table cells: escape backslashes, pipes and angle brackets; no newlines.
fn md_cell(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace('<', "\\<").replace('>', "\\>").replace(['\n', '\r'], " ")
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
    let optional = [
        ("accuracy_candidate", s.accuracy_candidate),
        ("accuracy_baseline", s.accuracy_baseline),
        ("constraints_strict_candidate", s.constraints_strict_candidate),
        ("constraints_strict_baseline", s.constraints_strict_baseline),
        ("constraints_loose_candidate", s.constraints_loose_candidate),
        ("constraints_loose_baseline", s.constraints_loose_baseline),
    ];
    for (name, v) in optional {
        if let Some(v) = v.filter(|v| !v.is_finite()) {
            bail!("iteration {label:?}: summary field {name} is not finite ({v})");
        }
    }
    Ok(())
}

fn has_constraints(entries: &[ReportEntry]) -> bool {
    entries.iter().any(|e| e.summary.constraints_strict_candidate.is_some())
}

/// Build the markdown text (also used by [`render_report`]).
pub fn render_markdown(entries: &[ReportEntry]) -> String {
    let mut md = String::new();
    let level = entries.first().map(|e| e.summary.ci_level).unwrap_or(0.95);
    let constraints = has_constraints(entries);
    let _ = writeln!(md, "# DNO evaluation report\n");
    let _ = writeln!(
        md,
        "Win-rate = mean P(candidate preferred over the baseline), ties count ½, each prompt weighted \
         equally; ± is the prompt-clustered standard error; the CI is a {:.0}% percentile bootstrap \
         over prompts. LC = length-controlled win-rate: σ(intercept) of a logistic fit of the preference \
         on tanh(Δlen / std Δlen) (AlpacaEval-2 style, without the per-instruction difficulty term). \
         First-pos = how often the judge prefers the response shown first (50% = no position bias).{}\n",
        100.0 * level,
        if constraints {
            " Strict = share of responses meeting all their prompt's constraints; loose = mean fraction of constraints met."
        } else {
            ""
        }
    );
    let extra_head = if constraints { " Strict cand % | Strict base % | Loose cand % | Loose base % |" } else { "" };
    let _ = writeln!(
        md,
        "| Iteration | Win-rate % | {:.0}% CI | LC % | Mean len cand | Mean len base | Acc cand % | Acc base % |{extra_head} First-pos % | W / T / L | Prompts | n |",
        100.0 * level
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|{}---|---|---|---|", if constraints { "---|---|---|---|" } else { "" });
    for e in entries {
        let s = &e.summary;
        let extra = if constraints {
            format!(
                " {} | {} | {} | {} |",
                opt_pct(s.constraints_strict_candidate),
                opt_pct(s.constraints_strict_baseline),
                opt_pct(s.constraints_loose_candidate),
                opt_pct(s.constraints_loose_baseline)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {} | {} ± {} | [{}, {}] | {} | {:.0} | {:.0} | {} | {} |{extra} {} | {} / {} / {} | {} | {} |",
            md_cell(&e.label),
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
    for e in entries {
        if let Some(w) = &e.summary.lc_warning {
            warnings.push(format!("- **{}**: {}", md_cell(&e.label), w));
        }
        for note in &e.summary.notes {
            warnings.push(format!("- **{}**: {}", md_cell(&e.label), note));
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(md, "\n## Warnings\n");
        for w in warnings {
            let _ = writeln!(md, "{w}");
        }
    }
    let _ = writeln!(md, "\n![Win-rate, accuracy and response length by iteration]({SVG_NAME})");
    md
}

/// Write `report.md` and `winrate.svg` into `out_dir` (created if missing), entries in display order.
pub fn render_report(entries: &[ReportEntry], out_dir: &Path) -> Result<ReportFiles> {
    if entries.is_empty() {
        bail!("render_report: no iterations to report");
    }
    for e in entries {
        check_finite(&e.label, &e.summary)?;
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating report directory {}", out_dir.display()))?;

    let markdown = render_markdown(entries);
    let markdown_path = out_dir.join(MD_NAME);
    std::fs::write(&markdown_path, &markdown).with_context(|| format!("writing {}", markdown_path.display()))?;

    let svg = render_svg(entries)?;
    let svg_path = out_dir.join(SVG_NAME);
    std::fs::write(&svg_path, svg).with_context(|| format!("writing {}", svg_path.display()))?;

    Ok(ReportFiles { markdown_path, svg_path, markdown })
}

/// x axis: iterations 0..=max on [-0.4, max + 0.4]; ticks only at whole iterations, 0 labelled π₁.
struct IterationAxis {
    max: u32,
}

impl Ranged for IterationAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let r = self.range();
        let frac = (v - r.start) / (r.end - r.start);
        limit.0 + (frac * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let n = self.max as usize + 1;
        let step = n.div_ceil(hint.max_num_points().max(1)).max(1);
        (0..n).step_by(step).map(|i| i as f64).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.4..(self.max as f64 + 0.4)
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing {SVG_NAME}: {e:?}")
}

/// Decimals that tell the y ticks of `[lo, hi]` apart: those of plotters' own tick step
/// (1, 2 or 5 × 10^k) for [`Y_LABELS`] labels, so 0, 0.5, 1, ... read "0.0, 0.5, 1.0".
pub fn tick_decimals(lo: f64, hi: f64) -> usize {
    let coord: RangedCoordf64 = (lo..hi).into();
    let pts = coord.key_points(Y_LABELS);
    let step = pts.windows(2).map(|w| w[1] - w[0]).fold(f64::INFINITY, f64::min);
    if !(step.is_finite() && step > 0.0) {
        return 0;
    }
    (-(step.log10() - 1e-9).floor()).max(0.0) as usize
}

/// Padded y-range in percent, clamped to [0, 100], at least `min_height` points tall.
fn padded_range(vals: impl Iterator<Item = f64>, pad: f64, min_height: f64) -> (f64, f64) {
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 100.0);
    }
    lo -= pad;
    hi += pad;
    if hi - lo < min_height {
        let mid = 0.5 * (lo + hi);
        lo = mid - 0.5 * min_height;
        hi = mid + 0.5 * min_height;
    }
    if lo < 0.0 {
        hi = (hi - lo).min(100.0);
        lo = 0.0;
    }
    if hi > 100.0 {
        lo = (lo - (hi - 100.0)).max(0.0);
        hi = 100.0;
    }
    (lo, hi)
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// One run's points in iteration order, with its colour and marker.
struct Series<'a> {
    name: &'a str,
    points: Vec<(u32, &'a EvalSummary)>,
    color: RGBColor,
    marker: usize,
    /// Horizontal offset so that the CI whiskers of different runs do not sit on each other.
    dx: f64,
}

impl Series<'_> {
    /// A single evaluated iteration: one segment from π₁ to a large marker.
    fn single(&self) -> bool {
        self.points.len() == 1
    }
    /// π₁ (from this run's first baseline) followed by the run's points, as (x, y).
    fn line(&self, at_pi1: f64, y: impl Fn(&EvalSummary) -> Option<f64>) -> Vec<(f64, f64)> {
        std::iter::once((0.0, at_pi1))
            .chain(self.points.iter().filter_map(|(t, s)| y(s).map(|v| (*t as f64 + self.dx, v))))
            .collect()
    }
    fn base(&self) -> &EvalSummary {
        self.points[0].1
    }
}

fn series_of(entries: &[ReportEntry]) -> Vec<Series<'_>> {
    let mut order: Vec<&str> = Vec::new();
    let mut by: BTreeMap<&str, Vec<(u32, &EvalSummary)>> = BTreeMap::new();
    for e in entries {
        let v = by.entry(e.run.as_str()).or_default();
        if v.is_empty() {
            order.push(e.run.as_str());
        }
        v.push((e.iteration, &e.summary));
    }
    let n = order.len();
    order
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let mut points = by.remove(name).unwrap_or_default();
            points.sort_by_key(|(t, _)| *t);
            let dx = if n > 1 { 0.06 * (i as f64 - 0.5 * (n as f64 - 1.0)) } else { 0.0 };
            Series { name, points, color: PALETTE[i % PALETTE.len()], marker: i % 4, dx }
        })
        .collect()
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<IterationAxis, RangedCoordf64>>;

fn draw_marker(chart: &mut Chart<'_, '_>, kind: usize, (x, y): (f64, f64), size: i32, color: RGBColor) -> Result<()> {
    let style = color.filled();
    match kind {
        0 => chart.draw_series(std::iter::once(Circle::new((x, y), size, style))).map_err(plot_err)?,
        1 => chart.draw_series(std::iter::once(TriangleMarker::new((x, y), size + 2, style))).map_err(plot_err)?,
        2 => chart
            .draw_series(std::iter::once(EmptyElement::at((x, y)) + Rectangle::new([(-size, -size), (size, size)], style)))
            .map_err(plot_err)?,
        _ => chart.draw_series(std::iter::once(Cross::new((x, y), size + 1, color.stroke_width(3)))).map_err(plot_err)?,
    };
    Ok(())
}

/// Draws one series' line (dashed when `dashed`: a panel's secondary metric) and its markers
/// (not on π₁'s point, which is drawn once as a black dot).
fn draw_line(chart: &mut Chart<'_, '_>, s: &Series<'_>, pts: &[(f64, f64)], dashed: bool) -> Result<()> {
    let color = s.color;
    let width = if dashed { 1 } else { 2 };
    if dashed {
        chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 7, 4, color.stroke_width(width))).map_err(plot_err)?;
    } else {
        chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(width))).map_err(plot_err)?;
    }
    let size = if s.single() { 6 } else { 4 };
    for &p in pts.iter().skip(1) {
        if dashed {
            chart.draw_series(std::iter::once(Circle::new(p, 3, color.stroke_width(1)))).map_err(plot_err)?;
        } else {
            draw_marker(chart, s.marker, p, size, color)?;
        }
    }
    Ok(())
}

/// The legend strip above the panels: each run's colour, marker and name, then π₁.
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, series: &[Series<'_>]) -> Result<()> {
    let font = ("sans-serif", 16).into_font();
    let (mut x, y) = (70i32, 22i32);
    let entry = |x0: i32, name: &str, color: RGBColor, marker: Option<usize>| -> Result<i32> {
        if marker.is_some() {
            area.draw(&PathElement::new(vec![(x0, y), (x0 + 24, y)], color.stroke_width(2))).map_err(plot_err)?;
        }
        let style = color.filled();
        let c = (x0 + 12, y);
        match marker {
            None => area.draw(&Circle::new(c, 5, style)).map_err(plot_err)?,
            Some(0) => area.draw(&Circle::new(c, 4, style)).map_err(plot_err)?,
            Some(1) => area.draw(&TriangleMarker::new(c, 6, style)).map_err(plot_err)?,
            Some(2) => area.draw(&Rectangle::new([(c.0 - 4, c.1 - 4), (c.0 + 4, c.1 + 4)], style)).map_err(plot_err)?,
            Some(_) => area.draw(&Cross::new(c, 5, color.stroke_width(3))).map_err(plot_err)?,
        }
        area.draw(&Text::new(name.to_string(), (x0 + 30, y - 8), font.clone())).map_err(plot_err)?;
        Ok(x0 + 30 + 7 * name.chars().count() as i32 + 24)
    };
    for s in series {
        let name = if s.single() { format!("{} (one round)", s.name) } else { s.name.to_string() };
        x = entry(x, &name, s.color, Some(s.marker))?;
    }
    entry(x, "π₁ (iteration 0: the baseline)", RGBColor(0, 0, 0), None)?;
    Ok(())
}

/// One panel: caption, y description, y range in its unit, and a drawing closure.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    (ylo, yhi): (f64, f64),
    max_iter: u32,
) -> Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(IterationAxis { max: max_iter }, ylo..yhi)
        .map_err(plot_err)?;
    let d = tick_decimals(ylo, yhi);
    let y_fmt = move |v: &f64| format!("{v:.d$}");
    let x_fmt = |v: &f64| {
        let i = v.round();
        if (v - i).abs() > 1e-6 || i < 0.0 {
            String::new()
        } else if i == 0.0 {
            "0 (π₁)".to_string()
        } else {
            format!("{i:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_labels(Y_LABELS)
        .y_label_formatter(&y_fmt)
        .light_line_style(BLACK.mix(0.03))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

fn pi1_dot(chart: &mut Chart<'_, '_>, y: f64) -> Result<()> {
    chart.draw_series(std::iter::once(Circle::new((0.0, y), 5, BLACK.filled()))).map_err(plot_err)?;
    Ok(())
}

/// Accuracy of a summary for the accuracy panel (candidate, baseline): the verifier's answer
/// accuracy, else the constraints' strict accuracy.
fn accuracy(s: &EvalSummary) -> (Option<f64>, Option<f64>) {
    match s.accuracy_candidate {
        Some(a) => (Some(a), s.accuracy_baseline),
        None => (s.constraints_strict_candidate, s.constraints_strict_baseline),
    }
}

/// Render the figure to an SVG string: win-rate, accuracy (when answers or constraints were
/// checked) and mean length, one series per run against iteration.
pub fn render_svg(entries: &[ReportEntry]) -> Result<String> {
    let series = series_of(entries);
    let max_iter = entries.iter().map(|e| e.iteration).max().unwrap_or(1).max(1);
    let with_acc = entries.iter().any(|e| accuracy(&e.summary).0.is_some());
    let with_loose = has_constraints(entries);
    let answers = entries.iter().any(|e| e.summary.accuracy_candidate.is_some());
    let n_panels = if with_acc { 3 } else { 2 };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 44 + 360 * n_panels as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (top, rest) = root.split_vertically(44);
        draw_legend(&top, &series)?;
        let panels = rest.split_evenly((n_panels, 1));

        // Panel 1: win-rate (solid, CI whiskers) and LC win-rate (dashed); π₁ = 50%.
        let range = padded_range(
            entries.iter().flat_map(|e| [e.summary.ci_low, e.summary.ci_high, e.summary.win_rate, e.summary.lc_win_rate]).map(|v| 100.0 * v).chain([50.0]),
            4.0,
            10.0,
        );
        let mut chart = panel(
            &panels[0],
            "Win-rate vs π₁ (%): solid = win-rate with 95% CI, dashed = length-controlled",
            "win-rate %",
            range,
            max_iter,
        )?;
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(-0.4, 50.0), (max_iter as f64 + 0.4, 50.0)], BLACK.mix(0.3))))
            .map_err(plot_err)?;
        for s in &series {
            chart
                .draw_series(s.points.iter().map(|(t, e)| {
                    let x = *t as f64 + s.dx;
                    PathElement::new(vec![(x, 100.0 * e.ci_low), (x, 100.0 * e.ci_high)], s.color.mix(0.5).stroke_width(2))
                }))
                .map_err(plot_err)?;
            draw_line(&mut chart, s, &s.line(50.0, |e| Some(100.0 * e.win_rate)), false)?;
            draw_line(&mut chart, s, &s.line(50.0, |e| Some(100.0 * e.lc_win_rate)), true)?;
        }
        pi1_dot(&mut chart, 50.0)?;

        // Panel 2 (optional): accuracy.
        if with_acc {
            let caption = match (answers, with_loose) {
                (true, _) => "Accuracy (%): the verifier's answer check",
                (false, true) => "Constraints met (%): solid = all met (strict), dashed = mean fraction met (loose)",
                (false, false) => "Accuracy (%)",
            };
            let vals = entries.iter().flat_map(|e| {
                let (c, b) = accuracy(&e.summary);
                [c, b, e.summary.constraints_loose_candidate.filter(|_| !answers), e.summary.constraints_loose_baseline.filter(|_| !answers)]
            });
            let range = padded_range(vals.flatten().map(|v| 100.0 * v), 4.0, 10.0);
            let mut chart = panel(&panels[1], caption, "%", range, max_iter)?;
            for s in &series {
                if let Some(b) = accuracy(s.base()).1 {
                    let pts = s.line(100.0 * b, |e| accuracy(e).0.map(|v| 100.0 * v));
                    draw_line(&mut chart, s, &pts, false)?;
                    pi1_dot(&mut chart, 100.0 * b)?;
                }
                if let (false, Some(b)) = (answers, s.base().constraints_loose_baseline) {
                    let pts = s.line(100.0 * b, |e| e.constraints_loose_candidate.map(|v| 100.0 * v));
                    draw_line(&mut chart, s, &pts, true)?;
                    pi1_dot(&mut chart, 100.0 * b)?;
                }
            }
            }

        // Last panel: mean response length; π₁ = the baseline's mean length.
        let max_len = entries.iter().map(|e| e.summary.mean_len_candidate.max(e.summary.mean_len_baseline)).fold(0.0f64, f64::max);
        let ymax = if max_len > 0.0 { 1.15 * max_len } else { 1.0 };
        let mut chart = panel(&panels[n_panels - 1], "Mean response length (characters)", "characters", (0.0, ymax), max_iter)?;
        for s in &series {
            let b = s.base().mean_len_baseline;
            draw_line(&mut chart, s, &s.line(b, |e| Some(e.mean_len_candidate)), false)?;
            pi1_dot(&mut chart, b)?;
        }

        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
