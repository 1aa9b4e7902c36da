//! Length-controlled win-rate (a reduced form of the AlpacaEval 2 "length_controlled_v1" GLM).
//!
//! Model, per comparison i with soft target y_i = p_candidate ∈ [0, 1]:
//!
//! ```text
//!   P(candidate preferred | i) = σ(a + b · x_i),   x_i = tanh(Δlen_i / std(Δlen)),
//!   Δlen_i = candidate_len_i − baseline_len_i   (characters)
//! ```
//!
//! fitted by Newton's method (IRLS) on the weighted soft cross-entropy
//! `L(a, b) = −Σ w_i [y_i log σ_i + (1 − y_i) log(1 − σ_i)] + (λ/2)(a² + b²)`,
//! with w_i = 1 / (#comparisons of the prompt of i), so every prompt carries weight 1 exactly as in
//! the raw (prompt-clustered) win-rate. The LC win-rate is the mean predicted preference at
//! Δlen = 0; without a per-instruction term that is simply σ(a).
//!
//! Differences from AlpacaEval 2 (`metrics/glm_winrate.py`):
//! * AE2's formula is `tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline − 1`;
//!   `instruction_difficulty` is a precomputed per-instruction feature that exists only for the
//!   805 AlpacaEval prompts, and `not_gamed_baseline` regularises toward verbose/concise "gamed"
//!   baselines. We have neither for arbitrary prompt sets, so our only covariate is the length
//!   term; prompt difficulty is absorbed into the intercept.
//! * AE2 uses L1 `LogisticRegressionCV` with 5-fold GroupKFold; we use a fixed small L2 penalty
//!   (default λ = 1e-3 relative to a total weight of n_prompts) only to keep the fit finite when
//!   all preferences are 0 or 1, and no cross-validation.
//! * AE2 averages σ(intercept + difficulty_j) over instructions; ours is σ(a).
//! * Like AE2, we warn when |LC − raw| exceeds 10 points ("sign of failure of the GLM").

/// Result of the 2-parameter logistic fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthFit {
    pub intercept: f64,
    pub slope: f64,
    pub iterations: usize,
    pub converged: bool,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^z) without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Weighted soft cross-entropy plus L2 penalty. Uses
/// −[y log σ(z) + (1−y) log(1−σ(z))] = softplus(z) − y z.
fn objective(x: &[f64], y: &[f64], w: &[f64], l2: f64, a: f64, b: f64) -> f64 {
    let mut loss = 0.0;
    for i in 0..x.len() {
        let z = a + b * x[i];
        loss += w[i] * (softplus(z) - y[i] * z);
    }
    loss + 0.5 * l2 * (a * a + b * b)
}

/// Fit σ(a + b x) to soft targets `y` with weights `w` by damped Newton steps.
/// Returns `None` when the inputs are empty or the fit does not produce finite numbers.
pub fn fit_logistic(x: &[f64], y: &[f64], w: &[f64], l2: f64) -> Option<LengthFit> {
    if x.is_empty() || x.len() != y.len() || x.len() != w.len() {
        return None;
    }
    let (mut a, mut b) = (0.0f64, 0.0f64);
    let mut obj = objective(x, y, w, l2, a, b);
    let max_iter = 100;
    for it in 1..=max_iter {
        // Gradient and Hessian of the penalised objective.
        let (mut ga, mut gb) = (l2 * a, l2 * b);
        let (mut haa, mut hab, mut hbb) = (l2, 0.0, l2);
        for i in 0..x.len() {
            let s = sigmoid(a + b * x[i]);
            let r = w[i] * (s - y[i]);
            ga += r;
            gb += r * x[i];
            let v = w[i] * s * (1.0 - s);
            haa += v;
            hab += v * x[i];
            hbb += v * x[i] * x[i];
        }
        let det = haa * hbb - hab * hab;
        if !(det.is_finite() && det > 0.0) {
            return None;
        }
        // Newton direction d = −H⁻¹ g (2×2 closed form).
        let da = -(hbb * ga - hab * gb) / det;
        let db = -(haa * gb - hab * ga) / det;
        // Backtracking line search keeps every step a descent step (the objective is convex).
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..50 {
            let (na, nb) = (a + t * da, b + t * db);
            let nobj = objective(x, y, w, l2, na, nb);
            if nobj.is_finite() && nobj <= obj + 1e-12 * obj.abs().max(1.0) {
                a = na;
                b = nb;
                obj = nobj;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !(a.is_finite() && b.is_finite()) {
            return None;
        }
        let step = (t * da).abs().max((t * db).abs());
        if !accepted || step < 1e-10 {
            return Some(LengthFit {
                intercept: a,
                slope: b,
                iterations: it,
                converged: true,
            });
        }
    }
    Some(LengthFit {
        intercept: a,
        slope: b,
        iterations: max_iter,
        converged: false,
    })
}

/// Evaluate σ(z); exposed for the summary code.
pub fn predict(fit: &LengthFit, x: f64) -> f64 {
    sigmoid(fit.intercept + fit.slope * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_known_parameters_from_exact_probabilities() {
        // Soft targets equal to the model's own probabilities ⇒ the unpenalised optimum is exact.
        let xs: Vec<f64> = (0..201).map(|i| -1.0 + i as f64 / 100.0).collect();
        let ys: Vec<f64> = xs.iter().map(|&x| sigmoid(0.4 + 1.3 * x)).collect();
        let ws = vec![1.0; xs.len()];
        let f = fit_logistic(&xs, &ys, &ws, 0.0).unwrap();
        assert!(f.converged);
        assert!((f.intercept - 0.4).abs() < 1e-6, "{f:?}");
        assert!((f.slope - 1.3).abs() < 1e-6, "{f:?}");
    }

    #[test]
    fn separable_targets_stay_finite_with_penalty() {
        let xs = [-0.5, -0.1, 0.2, 0.9];
        let ys = [0.0, 0.0, 1.0, 1.0];
        let ws = [1.0; 4];
        let f = fit_logistic(&xs, &ys, &ws, 1e-3).unwrap();
        assert!(f.intercept.is_finite() && f.slope.is_finite());
        assert!(f.slope > 5.0, "{f:?}");
    }

    #[test]
    fn intercept_only_matches_weighted_mean() {
        let xs = [0.0; 4];
        let ys = [1.0, 0.0, 0.5, 1.0];
        let ws = [0.5, 0.5, 1.0, 1.0];
        // x carries no information, so the slope is pinned only by the (tiny) penalty.
        let f = fit_logistic(&xs, &ys, &ws, 1e-12).unwrap();
        let wm = (0.5 + 0.0 + 0.5 + 1.0) / 3.0;
        assert!((sigmoid(f.intercept) - wm).abs() < 1e-9, "{f:?}");
    }
}
