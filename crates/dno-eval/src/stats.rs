//! Small statistics helpers: a seeded SplitMix64 RNG, means, sample std, quantiles,
//! and the percentile bootstrap over prompt clusters.

/// The seeded generator (dno-math's SplitMix64; [`SplitMix64::index`] draws resampling indices).
pub use dno_math::SplitMix64;

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (ddof = 1); 0 for fewer than two values.
pub fn sample_std(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (xs.len() - 1) as f64).sqrt()
}

/// Quantile of an ascending-sorted slice with linear interpolation between order statistics
/// (Hyndman & Fan type 7, the numpy default). `q` is clamped to [0, 1]; empty input gives 0.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let q = q.clamp(0.0, 1.0);
    let h = q * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = h - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// Percentile bootstrap CI for the mean of `cluster_means` (one value per prompt): resample
/// prompts with replacement `samples` times, take the (1-level)/2 and (1+level)/2 quantiles
/// of the replicate means.
pub fn bootstrap_mean_ci(
    cluster_means: &[f64],
    samples: usize,
    level: f64,
    seed: u64,
) -> (f64, f64) {
    let g = cluster_means.len();
    if g == 0 || samples == 0 {
        return (0.0, 0.0);
    }
    let mut rng = SplitMix64::new(seed);
    let mut reps: Vec<f64> = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut s = 0.0;
        for _ in 0..g {
            s += cluster_means[rng.index(g)];
        }
        reps.push(s / g as f64);
    }
    reps.sort_by(f64::total_cmp);
    let alpha = 1.0 - level;
    (
        quantile_sorted(&reps, alpha / 2.0),
        quantile_sorted(&reps, 1.0 - alpha / 2.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_uniformish() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = SplitMix64::new(1);
        let n = 100_000;
        let m: f64 = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((m - 0.5).abs() < 0.01, "mean of uniforms {m}");
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.index(5)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "bucket count {c}");
        }
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile_sorted(&v, 1.0), 5.0);
        assert_eq!(quantile_sorted(&v, 0.5), 3.0);
        assert!((quantile_sorted(&v, 0.1) - 1.4).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[2.5], 0.3), 2.5);
    }

    #[test]
    fn std_matches_hand_value() {
        // values 2,4,4,4,5,5,7,9: population var 4, sample var 32/7.
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!((sample_std(&v) - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(sample_std(&[3.0]), 0.0);
    }
}
