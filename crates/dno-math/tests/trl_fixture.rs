//! Agreement with TRL's DPO-family losses on numbers produced by TRL itself.
//!
//! Reads `fixtures/reference/trl_losses.json` (written by another
//! stage of the project) and **skips only when that file is absent**. Any
//! other problem (unreadable JSON, a case without the fields below, no case
//! of a known loss type) fails the test.
//!
//! Accepted layout: a list of cases, or `{"cases": [...]}`, or an object whose
//! values are cases (the key then names the loss type when the case does not).
//! A case has:
//! * `loss_type` (or `type`): `sigmoid` (DPO; optional `label_smoothing` ε,
//!   which is DNO's soft target z = 1 − ε), `ipo`, `sppo_hard`; other types
//!   are reported and skipped;
//! * `beta`;
//! * the four sequence log-probs, each a number or a list:
//!   `policy_chosen_logps` | `chosen_logps`, `policy_rejected_logps` |
//!   `rejected_logps`, `reference_chosen_logps` | `ref_chosen_logps`,
//!   `reference_rejected_logps` | `ref_rejected_logps`;
//! * the per-pair `losses` (or `loss`: per-pair list, or one number = the
//!   batch mean); optional `chosen_rewards`, `rejected_rewards`.

use dno_math::loss::{dno_loss, ipo_loss, sppo_loss, LossOutput, PairInputs};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    dir.join("../../fixtures/reference/trl_losses.json")
}

fn numbers(v: &Value) -> Option<Vec<f64>> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| vec![x]),
        Value::Array(a) => a.iter().map(|x| x.as_f64()).collect(),
        _ => None,
    }
}

fn field(case: &Value, names: &[&str]) -> Option<Vec<f64>> {
    names.iter().find_map(|n| case.get(*n).and_then(numbers))
}

/// The reference script's layout: one case holds several losses as fields (`sigmoid`,
/// `ipo_unnormalized` = the paper's sequence-level IPO, `sppo_hard`); expand it into one case per
/// compared loss. (`ipo` there is TRL's length-normalised variant, compared via
/// `ipo_unnormalized` since the normalisation is the caller's choice.)
fn expand(c: &Value) -> Vec<Value> {
    if c.get("loss_type").is_some() || c.get("type").is_some() {
        return vec![c.clone()];
    }
    [("sigmoid", "sigmoid"), ("ipo_unnormalized", "ipo"), ("sppo_hard", "sppo_hard")]
        .iter()
        .filter_map(|(field, kind)| {
            let v = c.get(*field)?.clone();
            let mut one = c.clone();
            one["loss_type"] = Value::String(kind.to_string());
            one["loss"] = v;
            Some(one)
        })
        .collect()
}

fn cases(root: &Value) -> Vec<(String, Value)> {
    let with_name = |name: String, c: &Value| (name, c.clone());
    match root {
        Value::Array(a) => a.iter().map(|c| with_name(String::new(), c)).collect(),
        Value::Object(o) => match o.get("cases") {
            Some(Value::Array(a)) => a.iter().flat_map(expand).map(|c| with_name(String::new(), &c)).collect(),
            _ => o
                .iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, v)| with_name(k.clone(), v))
                .collect(),
        },
        _ => Vec::new(),
    }
}

fn close(got: f64, want: f64) -> bool {
    // The fixture is computed in float32 by torch; allow for that.
    (got - want).abs() <= 2e-4 * (1.0 + want.abs())
}

/// Compares every case of the fixture at `path`; returns the number of cases compared.
fn check_fixture(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let root: Value = serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    let all = cases(&root);
    if all.is_empty() {
        return Err(format!("{}: no cases found", path.display()));
    }
    let mut compared = 0;
    for (i, (key, case)) in all.iter().enumerate() {
        let kind = case
            .get("loss_type")
            .or_else(|| case.get("type"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| key.clone());
        let label = format!("case {i} ({kind})");
        if !matches!(kind.as_str(), "sigmoid" | "dpo" | "ipo" | "sppo_hard") {
            eprintln!("{label}: loss type not compared here, skipped");
            continue;
        }
        let need = |names: &[&str]| field(case, names).ok_or_else(|| format!("{label}: no {}", names[0]));
        let beta = case.get("beta").and_then(Value::as_f64).ok_or_else(|| format!("{label}: no beta"))?;
        let ls = case.get("label_smoothing").and_then(Value::as_f64).unwrap_or(0.0);
        let pc = need(&["policy_chosen_logps", "chosen_logps"])?;
        let pr = need(&["policy_rejected_logps", "rejected_logps"])?;
        let rc = need(&["reference_chosen_logps", "ref_chosen_logps"])?;
        let rr = need(&["reference_rejected_logps", "ref_rejected_logps"])?;
        let n = pc.len();
        if !(pr.len() == n && rc.len() == n && rr.len() == n) {
            return Err(format!("{label}: log-prob lists differ in length"));
        }
        let mut outs: Vec<LossOutput> = Vec::with_capacity(n);
        for k in 0..n {
            let x = PairInputs { policy_chosen: pc[k], policy_rejected: pr[k], ref_chosen: rc[k], ref_rejected: rr[k] };
            let out = match kind.as_str() {
                // TRL sigmoid with label smoothing ε = DNO's soft-label loss with z = 1 − ε.
                "sigmoid" | "dpo" => dno_loss(&x, beta, 1.0 - ls),
                "ipo" => ipo_loss(&x, beta, beta),
                // TRL's sppo_hard sums the two squares; SPPO's code averages them.
                _ => sppo_loss(&x, beta, 1.0, 0.0).map(|mut o| {
                    o.loss *= 2.0;
                    o
                }),
            }
            .map_err(|e| format!("{label}: {e}"))?;
            outs.push(out);
        }
        let want = need(&["losses", "loss"])?;
        if want.len() == n {
            for k in 0..n {
                if !close(outs[k].loss, want[k]) {
                    return Err(format!("{label} pair {k}: ours {} vs TRL {}", outs[k].loss, want[k]));
                }
            }
        } else if want.len() == 1 {
            let mean = outs.iter().map(|o| o.loss).sum::<f64>() / n as f64;
            if !close(mean, want[0]) {
                return Err(format!("{label}: mean ours {mean} vs TRL {}", want[0]));
            }
        } else {
            return Err(format!("{label}: {} losses for {n} pairs", want.len()));
        }
        for (name, get) in [
            ("chosen_rewards", (|o: &LossOutput| o.reward_chosen) as fn(&LossOutput) -> f64),
            ("rejected_rewards", |o: &LossOutput| o.reward_rejected),
        ] {
            if let Some(w) = field(case, &[name]) {
                for (k, w) in w.iter().enumerate().take(n) {
                    if !close(get(&outs[k]), *w) {
                        return Err(format!("{label} pair {k}: {name} {} vs TRL {w}", get(&outs[k])));
                    }
                }
            }
        }
        compared += 1;
    }
    if compared == 0 {
        return Err(format!("{}: no case of a compared loss type", path.display()));
    }
    Ok(compared)
}

#[test]
fn trl_losses_fixture_matches() {
    let path = fixture_path();
    if !path.exists() {
        eprintln!("SKIP: {} is absent", path.display());
        return;
    }
    match check_fixture(&path) {
        Ok(n) => eprintln!("compared {n} TRL cases from {}", path.display()),
        Err(e) => panic!("{e}"),
    }
}

/// The reader itself, on a fixture written here with hand-computed TRL values
/// (see `trl_formulas_on_hand_numbers`), in each accepted layout.
#[test]
fn fixture_reader_accepts_documented_layouts_and_catches_mismatches() {
    let dir = std::env::temp_dir().join(format!("dno-math-trl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logps = r#""policy_chosen_logps": [-10.0, -5.0], "policy_rejected_logps": [-12.0, -6.0],
        "reference_chosen_logps": [-10.5, -5.0], "reference_rejected_logps": [-11.0, -6.0]"#;
    // Second pair: Δ = 0 → sigmoid ln 2; ipo (0 − 5)² = 25; sppo_hard 25 + 25 = 50.
    let sigmoid = format!(r#"{{"loss_type": "sigmoid", "beta": 0.1, {logps}, "losses": [0.6209570478, 0.6931471806],
        "chosen_rewards": [0.05, 0.0], "rejected_rewards": [-0.1, 0.0]}}"#);
    let smooth = format!(r#"{{"loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.2, {logps}, "losses": [0.6509570478, 0.6931471806]}}"#);
    let ipo = format!(r#"{{"loss_type": "ipo", "beta": 0.1, {logps}, "loss": 18.625}}"#);
    let sppo = format!(r#"{{"type": "sppo_hard", "beta": 0.1, {logps}, "losses": [36.25, 50.0]}}"#);
    let other = format!(r#"{{"loss_type": "aot", "beta": 0.1, {logps}, "losses": [1.0, 1.0]}}"#);
    let layouts = [
        format!("[{sigmoid}, {smooth}, {ipo}, {sppo}, {other}]"),
        format!(r#"{{"cases": [{sigmoid}, {ipo}]}}"#),
        format!(r#"{{"sigmoid": {sigmoid}, "ipo": {ipo}, "version": "x"}}"#),
    ];
    for (i, text) in layouts.iter().enumerate() {
        let p = dir.join(format!("layout{i}.json"));
        std::fs::write(&p, text).unwrap();
        let n = check_fixture(&p).unwrap_or_else(|e| panic!("layout {i}: {e}"));
        assert_eq!(n, [4, 2, 2][i]);
    }
    let bad = format!(r#"[{}]"#, sigmoid.replace("0.6209570478", "0.7"));
    let p = dir.join("bad.json");
    std::fs::write(&p, bad).unwrap();
    assert!(check_fixture(&p).unwrap_err().contains("pair 0"));
    std::fs::write(&p, format!("[{other}]")).unwrap();
    assert!(check_fixture(&p).unwrap_err().contains("no case of a compared loss type"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Hand-derived TRL values (no fixture needed), for numbers chosen so the
/// arithmetic can be checked with a pocket calculator.
#[test]
fn trl_formulas_on_hand_numbers() {
    // policy (−10, −12), reference (−10.5, −11): Δ = (−10+12) − (−10.5+11) = 2 − 0.5 = 1.5.
    let x = PairInputs { policy_chosen: -10.0, policy_rejected: -12.0, ref_chosen: -10.5, ref_rejected: -11.0 };
    // sigmoid, β = 0.1: −log σ(0.15) = log(1 + e^{−0.15}) = log(1.860707976) = 0.6209570478.
    let o = dno_loss(&x, 0.1, 1.0).unwrap();
    assert!((o.loss - 0.620_957_047_8).abs() < 1e-9, "{}", o.loss);
    // label_smoothing 0.2: −0.8·log σ(h) − 0.2·log σ(−h), and −log σ(−h) = h − log σ(h),
    // so 0.6209570478 + 0.2·0.15 = 0.6509570478.
    let o = dno_loss(&x, 0.1, 0.8).unwrap();
    assert!((o.loss - 0.650_957_047_8).abs() < 1e-9, "{}", o.loss);
    // ipo, β = 0.1: (1.5 − 5)² = 12.25.
    assert!((ipo_loss(&x, 0.1, 0.1).unwrap().loss - 12.25).abs() < 1e-12);
    // sppo_hard, β = 0.1: a = 0.5, b = −1: (0.5 − 5)² + (−1 + 5)² = 20.25 + 16 = 36.25 = 2 × ours.
    assert!((2.0 * sppo_loss(&x, 0.1, 1.0, 0.0).unwrap().loss - 36.25).abs() < 1e-12);
    // Rewards: β·a = 0.05, β·b = −0.1.
    assert!((o.reward_chosen - 0.05).abs() < 1e-15 && (o.reward_rejected + 0.1).abs() < 1e-15);
}
