//! (3) The report renders for a 3-iteration fixture; the SVG is well-formed XML with the series.

mod common;
use common::*;
use dno_eval::{render_report, render_svg, summarize, tick_decimals, Comparison, EvalOptions, EvalSummary, ReportEntry};

/// Minimal XML well-formedness check: skips the prolog, comments and CDATA, honours quoted
/// attribute values, and checks that start/end tags nest and balance. Returns the element
/// names in document order.
fn check_xml(doc: &str) -> Result<Vec<String>, String> {
    let b = doc.as_bytes();
    let mut i = 0;
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut saw_root = false;
    while i < b.len() {
        if b[i] != b'<' {
            if stack.is_empty() && !b[i].is_ascii_whitespace() {
                return Err(format!("text outside the root element at byte {i}"));
            }
            if b[i] == b'>' {
                return Err(format!("stray '>' at byte {i}"));
            }
            i += 1;
            continue;
        }
        let rest = &doc[i..];
        if rest.starts_with("<?") {
            i += rest.find("?>").ok_or("unterminated <? ?>")? + 2;
            continue;
        }
        if rest.starts_with("<!--") {
            i += rest.find("-->").ok_or("unterminated comment")? + 3;
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            i += rest.find("]]>").ok_or("unterminated CDATA")? + 3;
            continue;
        }
        if rest.starts_with("<!") {
            i += rest.find('>').ok_or("unterminated <!")? + 1;
            continue;
        }
        // Find the end of the tag, skipping '>' inside quoted attribute values.
        let mut j = i + 1;
        let mut quote: Option<u8> = None;
        while j < b.len() {
            match (quote, b[j]) {
                (None, b'"') | (None, b'\'') => quote = Some(b[j]),
                (Some(q), c) if c == q => quote = None,
                (None, b'<') => return Err(format!("'<' inside a tag at byte {j}")),
                (None, b'>') => break,
                _ => {}
            }
            j += 1;
        }
        if j >= b.len() {
            return Err(format!("unterminated tag at byte {i}"));
        }
        let inner = &doc[i + 1..j];
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else {
            let self_closing = inner.ends_with('/');
            let name: String = inner
                .trim_end_matches('/')
                .split(|c: char| c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                return Err(format!("empty tag name at byte {i}"));
            }
            if stack.is_empty() {
                if saw_root {
                    return Err("more than one root element".into());
                }
                saw_root = true;
            }
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        i = j + 1;
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if !saw_root {
        return Err("no root element".into());
    }
    Ok(names)
}

#[test]
fn xml_checker_rejects_broken_documents() {
    assert!(check_xml("<svg><g></g></svg>").is_ok());
    assert!(check_xml("<?xml version=\"1.0\"?>\n<svg a=\"x>y\"><path d=\"M0 0\"/></svg>").is_ok());
    assert!(check_xml("<svg><g></svg>").is_err());
    assert!(check_xml("<svg><g></g>").is_err());
    assert!(check_xml("<svg></svg><svg></svg>").is_err());
    assert!(check_xml("<svg><text>a < b</text></svg>").is_err());
}

fn iteration(seed: u64, q: f64, len_shift: usize) -> EvalSummary {
    let mut g = Gen::new(seed);
    let comps: Vec<Comparison> = (0..120)
        .map(|i| {
            let base = g.range(300, 700);
            let cand = (base as f64 + len_shift as f64 + 150.0 * g.normal()).max(20.0) as usize;
            let first = if g.bernoulli(q + 0.05) { 1.0 } else { 0.0 };
            let second = if g.bernoulli(q - 0.05) { 1.0 } else { 0.0 };
            Comparison {
                candidate_correct: Some(g.bernoulli(q)),
                baseline_correct: Some(g.bernoulli(0.5)),
                ..comp_two_orders(&format!("p{i}"), first, second, cand, base)
            }
        })
        .collect();
    summarize(
        &comps,
        &EvalOptions {
            seed,
            ..EvalOptions::default()
        },
    )
    .unwrap()
}

fn fixture() -> Vec<ReportEntry> {
    vec![
        ReportEntry::new("iter0 (SFT)", "run <lr&β>", 1, iteration(1, 0.5, 0)),
        ReportEntry::new("iter1", "run <lr&β>", 2, iteration(2, 0.6, 60)),
        ReportEntry::new("iter2 <lr&β>", "run <lr&β>", 3, iteration(3, 0.68, 150)),
    ]
}

#[test]
fn report_renders_for_three_iterations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/report");
    let iters = fixture();
    let files = render_report(&iters, &out).unwrap();

    // Markdown: file content == returned string; one row per iteration, in order.
    let md = std::fs::read_to_string(&files.markdown_path).unwrap();
    assert_eq!(md, files.markdown);
    println!("{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| iter")).collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert!(
        rows[0].contains("iter0 (SFT)") && rows[1].contains("iter1") && rows[2].contains("iter2")
    );
    let header = md.lines().find(|l| l.starts_with("| Iteration")).unwrap();
    assert_eq!(
        header.matches('|').count(),
        rows[0].matches('|').count(),
        "column count"
    );
    for (row, e) in rows.iter().zip(&iters) {
        let s = &e.summary;
        assert!(
            row.contains(&format!(
                "{:.1} ± {:.1}",
                100.0 * s.win_rate,
                100.0 * s.win_rate_se
            )),
            "{row}"
        );
        assert!(
            row.contains(&format!(
                "[{:.1}, {:.1}]",
                100.0 * s.ci_low,
                100.0 * s.ci_high
            )),
            "{row}"
        );
        assert!(
            row.contains(&format!("| {:.1} |", 100.0 * s.lc_win_rate)),
            "{row}"
        );
        assert!(
            row.contains(&format!(
                "| {:.0} | {:.0} |",
                s.mean_len_candidate, s.mean_len_baseline
            )),
            "{row}"
        );
        assert!(
            row.contains(&format!("{:.1}", 100.0 * s.accuracy_candidate.unwrap())),
            "{row}"
        );
    }
    assert!(md.contains("(winrate.svg)"));

    // SVG: well-formed, an <svg> root, series drawn as polylines/paths, labels as text.
    let svg = std::fs::read_to_string(&files.svg_path).unwrap();
    let head = svg.trim_start();
    assert!(
        head.starts_with("<svg") || head.starts_with("<?xml"),
        "{}",
        &head[..40.min(head.len())]
    );
    let names = check_xml(&svg).unwrap_or_else(|e| panic!("SVG is not well-formed: {e}"));
    assert_eq!(names[0], "svg");
    let polylines = names
        .iter()
        .filter(|n| *n == "polyline" || *n == "path")
        .count();
    // win-rate, LC (dashed: several segments), 2 length series, CI whiskers, legend samples.
    assert!(polylines >= 4, "only {polylines} polyline/path elements");
    assert!(svg.contains("0 (π₁)"), "x-axis label of π₁ missing");
    assert!(svg.contains("run &lt;lr&amp;β&gt;"), "series name not XML-escaped");
    assert!(svg.contains("Win-rate vs π₁"));
    assert!(svg.contains("Accuracy (%)"), "accuracy panel missing");
    assert!(svg.contains("Mean response length"));
    assert!(svg.contains("length-controlled"));
    assert!(!svg.contains("NaN"));
}

#[test]
fn report_renders_for_a_single_iteration_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let one = vec![ReportEntry::new("only", "run", 1, iteration(5, 0.55, 10))];
    let files = render_report(&one, dir.path()).unwrap();
    let svg = std::fs::read_to_string(&files.svg_path).unwrap();
    check_xml(&svg).unwrap();

    let err = render_report(&[], dir.path()).unwrap_err().to_string();
    assert!(err.contains("no iterations"), "{err}");

    let mut bad = iteration(6, 0.5, 0);
    bad.lc_win_rate = f64::NAN;
    let err = render_report(&[ReportEntry::new("it-bad", "run", 1, bad)], dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("it-bad") && err.contains("lc_win_rate"),
        "{err}"
    );

    // The output directory cannot be created beneath a regular file.
    let file = dir.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let err = render_report(&one, &file.join("sub"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("creating report directory"), "{err}");
}

#[test]
fn warnings_and_notes_appear_in_markdown() {
    let mut s = iteration(7, 0.5, 0);
    s.lc_warning = Some("planted warning".into());
    s.notes.push("planted note".into());
    let md = dno_eval::render_markdown(&[ReportEntry::new("w|x", "run", 1, s)]);
    assert!(md.contains("## Warnings"));
    assert!(md.contains("**w\\|x**: planted warning"), "{md}");
    assert!(md.contains("planted note"));
}

/// A quickstart-like comparison of three runs: DNO-Prct and soft DNO over 3 iterations, offline
/// DPO as one round; answers of ~2 characters (so the length axis spans only 0..3).
fn runs_fixture() -> Vec<ReportEntry> {
    let short = |mut s: EvalSummary, cand: f64| {
        s.mean_len_candidate = cand;
        s.mean_len_baseline = 2.0;
        s
    };
    let mut v = Vec::new();
    for t in 1..=3u32 {
        v.push(ReportEntry::new(format!("dno-prct/iter-{t}"), "dno-prct", t, short(iteration(10 + t as u64, 0.5 + 0.04 * t as f64, 0), 2.0 + 0.1 * t as f64)));
    }
    for t in 1..=3u32 {
        v.push(ReportEntry::new(format!("dno-soft/iter-{t}"), "dno-soft", t, short(iteration(20 + t as u64, 0.5, 0), 2.0)));
    }
    v.push(ReportEntry::new("offline-dpo/iter-1", "offline-dpo", 1, short(iteration(30, 0.55, 0), 2.2)));
    v
}

/// The trimmed contents of every `<text>` element, in document order.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|rest| {
            let body = &rest[rest.find('>').unwrap() + 1..];
            body[..body.find("</text>").unwrap()].trim().to_string()
        })
        .collect()
}

/// `(stroke colour, stroke width, points)` of every `<polyline>` in the SVG.
fn polylines(svg: &str) -> Vec<(String, String, Vec<(f64, f64)>)> {
    let attr = |tag: &str, name: &str| -> String {
        let key = format!(" {name}=\"");
        tag.find(&key).map(|i| tag[i + key.len()..].split('"').next().unwrap_or("").to_string()).unwrap_or_default()
    };
    svg.split("<polyline")
        .skip(1)
        .map(|rest| {
            let tag = &rest[..rest.find("/>").unwrap()];
            let pts = attr(tag, "points")
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            (attr(tag, "stroke"), attr(tag, "stroke-width"), pts)
        })
        .collect()
}

#[test]
fn one_series_per_run_starting_from_pi1_at_iteration_0() {
    let entries = runs_fixture();
    let svg = render_svg(&entries).unwrap();
    check_xml(&svg).unwrap();
    // Solid width-2 lines with at least 3 points: one per run that has several iterations and
    // panel (win-rate, accuracy, length), each π₁ + 3 iterations = 4 points.
    let lines = polylines(&svg);
    let solid: Vec<&(String, String, Vec<(f64, f64)>)> = lines.iter().filter(|(_, w, p)| w == "2" && p.len() >= 3).collect();
    let colours: std::collections::BTreeSet<&str> = solid.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(colours.len(), 2, "one solid series per multi-iteration run, got {colours:?}");
    assert_eq!(solid.len(), 2 * 3, "two runs x three panels");
    for (_, _, p) in &solid {
        assert_eq!(p.len(), 4, "π₁ and three iterations: {p:?}");
        assert!(p.windows(2).all(|w| w[1].0 > w[0].0), "x increases with the iteration: {p:?}");
    }
    // Every series starts at the same x (iteration 0 = π₁), and iteration t of both runs sits at
    // (nearly) the same x: the runs are not laid end to end.
    let x0 = solid[0].2[0].0;
    assert!(solid.iter().all(|(_, _, p)| (p[0].0 - x0).abs() < 1e-9));
    let (a, b) = (&solid[0].2, solid.iter().find(|(c, _, _)| *c != solid[0].0).unwrap().2.clone());
    for t in 1..4 {
        assert!((a[t].0 - b[t].0).abs() < 20.0, "iteration {t}: {} vs {}", a[t].0, b[t].0);
    }
    // Offline DPO (one round) is its own series in a third colour, named in the legend: one solid
    // segment from π₁ per panel (not dashed: dashed means LC win-rate / loose accuracy).
    let t = texts(&svg);
    assert_eq!(&t[..3], ["dno-prct", "dno-soft", "offline-dpo (one round)"], "legend: one entry per run");
    let third: Vec<_> = lines.iter().filter(|(c, w, _)| w == "2" && !colours.contains(c.as_str()) && c != "#000000").collect();
    assert!(!third.is_empty(), "no offline-dpo segments");
    let segments: Vec<_> = third.iter().filter(|(_, _, p)| p.len() == 2 && (p[0].0 - x0).abs() < 1e-9).collect();
    assert_eq!(segments.len(), 3, "one solid π₁ → round-1 segment per panel: {third:?}");
    assert_eq!(t.iter().filter(|x| *x == "0 (π₁)").count(), 3, "iteration 0 is labelled π₁ in every panel");
    assert!(!svg.contains("dno-prct/iter-3"), "no joined labels along one axis");
}

#[test]
fn tick_labels_have_the_datas_precision() {
    // Lengths of ~2 characters: today's labels were "0, 0, 1, 2, 2, 2".
    let t = texts(&render_svg(&runs_fixture()).unwrap());
    let at = t.iter().position(|x| x == "characters").unwrap();
    let ticks: Vec<&str> = t[at + 2..].iter().take(6).map(String::as_str).collect();
    assert_eq!(ticks, ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"], "{t:?}");
    assert_eq!(tick_decimals(0.0, 2.5), 1);
    assert_eq!(tick_decimals(0.0, 0.25), 2);
    assert_eq!(tick_decimals(40.0, 60.0), 0);
    assert_eq!(tick_decimals(0.0, 800.0), 0);
    assert_eq!(tick_decimals(49.0, 51.0), 1);
}

#[test]
fn accuracy_panel_only_with_answers_or_constraints() {
    let mut entries = runs_fixture();
    assert!(render_svg(&entries).unwrap().contains("Accuracy (%)"));
    for e in &mut entries {
        e.summary.accuracy_candidate = None;
        e.summary.accuracy_baseline = None;
    }
    let svg = render_svg(&entries).unwrap();
    assert!(!svg.contains("Accuracy (%)") && !svg.contains("Constraints met"));
    for e in &mut entries {
        e.summary.constraints_strict_candidate = Some(0.4);
        e.summary.constraints_strict_baseline = Some(0.3);
        e.summary.constraints_loose_candidate = Some(0.7);
        e.summary.constraints_loose_baseline = Some(0.6);
    }
    let svg = render_svg(&entries).unwrap();
    assert!(svg.contains("Constraints met (%)"));
    let md = dno_eval::render_markdown(&entries);
    assert!(md.contains("Strict cand %") && md.contains("| 40.0 | 30.0 | 70.0 | 60.0 |"), "{md}");
}

#[test]
fn summary_reports_strict_and_loose_constraint_accuracy() {
    let comps: Vec<Comparison> = [(Some(1.0), Some(0.5)), (Some(0.5), Some(1.0)), (Some(1.0), Some(0.0)), (None, None)]
        .iter()
        .enumerate()
        .map(|(i, &(c, b))| Comparison { candidate_constraints: c, baseline_constraints: b, ..comp_two_orders(&format!("p{i}"), 1.0, 0.0, 10, 10) })
        .collect();
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    assert!((s.constraints_strict_candidate.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((s.constraints_strict_baseline.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert!((s.constraints_loose_candidate.unwrap() - 2.5 / 3.0).abs() < 1e-12);
    assert!((s.constraints_loose_baseline.unwrap() - 0.5).abs() < 1e-12);
    let none = summarize(&comps[3..], &EvalOptions::default()).unwrap();
    assert_eq!((none.constraints_strict_candidate, none.constraints_loose_baseline), (None, None));
    let mut bad = comps.clone();
    bad[0].candidate_constraints = Some(1.5);
    let e = summarize(&bad, &EvalOptions::default()).unwrap_err().to_string();
    assert!(e.contains("candidate_constraints") && e.contains("p0"), "{e}");
}

