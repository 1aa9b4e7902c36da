//! The tabular Nash check: DNO (Alg. 1) driven by `dno_math::loss::dno_loss`
//! reaches the von Neumann winner on intransitive games (its averaged policy
//! has exploitability < 0.02), while a Bradley-Terry reward maximiser on
//! rock-paper-scissors keeps cycling with a highly exploitable last iterate.
//!
//! Run with `--nocapture` to see the measured numbers.

use dno_math::nash::{argmax, run_bt_maximiser, run_dno, BtConfig, DnoTabularConfig, PairWeighting, PreferenceGame};

/// For n = 3..=8, twice each: the first two seeds (counting from 1) whose
/// P = ½ + skew-symmetric matrix has no Condorcet winner (so the Nash policy
/// is mixed and the game is intransitive at the top, hence has a 3-cycle).
fn intransitive_games() -> Vec<(usize, PreferenceGame, u64)> {
    let mut out = Vec::new();
    for n in 3..=8 {
        let mut found = 0;
        for seed in 1..=200u64 {
            let g = PreferenceGame::random_skew(n, seed, 0.5).unwrap();
            if g.condorcet_winner().is_none() {
                assert!(g.is_intransitive());
                out.push((n, g, seed));
                found += 1;
                if found == 2 {
                    break;
                }
            }
        }
        assert_eq!(found, 2, "no intransitive games for n={n}");
    }
    out
}

/// η = 10, T = 3000: the Hedge bound η ln n / T + 1/(8η) is < 0.02 for n ≤ 8 (uniform start).
fn dno_cfg() -> DnoTabularConfig {
    DnoTabularConfig::default()
}

#[test]
fn dno_reaches_nash_on_rock_paper_scissors_from_a_skewed_start() {
    let game = PreferenceGame::rock_paper_scissors();
    let init = [2.0, 0.0, -1.0]; // π_1 ≈ (0.84, 0.11, 0.04)
    let start = game.exploitability(&dno_math::nash::softmax(&init)).unwrap();
    let run = run_dno(&game, &init, &dno_cfg()).unwrap();
    let e = run.exploitability_average();
    println!(
        "RPS DNO: start {start:.4}; avg-policy exploitability after T=10/100/300/1000/3000: {:.4} {:.4} {:.4} {:.4} {:.4}; last iterate {:.4}; avg {:?}; inner steps <= {}, final grad <= {:.1e}",
        run.average_exploitability[9],
        run.average_exploitability[99],
        run.average_exploitability[299],
        run.average_exploitability[999],
        e,
        run.exploitability_last(),
        run.average,
        run.max_inner_steps,
        run.max_final_grad
    );
    assert!(start > 0.35, "start should be far from Nash, got {start}");
    assert!(e < 0.02, "DNO average exploitability {e}");
    // Each update solved its regression (the argmin of Eq. 11) accurately.
    assert!(run.max_final_grad <= 1e-12, "inner GD not converged: {}", run.max_final_grad);
    // The averaged policy is close to the uniform Nash policy.
    for p in &run.average {
        assert!((p - 1.0 / 3.0).abs() < 0.05, "{:?}", run.average);
    }
    // And it improves with T (converges on average).
    assert!(run.average_exploitability[2999] < run.average_exploitability[99]);
}

#[test]
fn dno_reaches_nash_on_random_intransitive_games() {
    let mut worst: f64 = 0.0;
    for (n, game, seed) in intransitive_games() {
        // Non-uniform start.
        let init: Vec<f64> = (0..n).map(|i| 1.5 * ((i as f64) - (n as f64) / 2.0) / n as f64 * 2.0).collect();
        let run = run_dno(&game, &init, &dno_cfg()).unwrap();
        let e = run.exploitability_average();
        println!(
            "random n={n} seed={seed}: start {:.4}, DNO avg exploitability {e:.5} (T=300: {:.4}), last iterate {:.4}",
            run.iterate_exploitability[0], run.average_exploitability[299], run.exploitability_last()
        );
        assert!(run.max_final_grad <= 1e-12);
        assert!(e < 0.02, "n={n} seed={seed}: DNO average exploitability {e}");
        worst = worst.max(e);
    }
    println!("worst DNO average exploitability over random games: {worst:.5}");
}

#[test]
fn bradley_terry_maximiser_does_not_converge_on_rock_paper_scissors() {
    let game = PreferenceGame::rock_paper_scissors();
    let init = [2.0, 0.0, -1.0];
    let run = run_bt_maximiser(&game, &init, &BtConfig::default()).unwrap();
    let t = run.policies.len();
    let tail = &run.iterate_exploitability[1..];
    let min_after_first = tail.iter().copied().fold(f64::INFINITY, f64::min);
    let winners: Vec<usize> = run.policies.iter().map(|p| argmax(p)).collect();
    let switches = winners.windows(2).filter(|w| w[0] != w[1]).count();
    let mut visits = [0usize; 3];
    for &w in &winners[t / 2..] {
        visits[w] += 1;
    }
    println!(
        "RPS BT maximiser: last-iterate exploitability {:.4}, min over iterates 2..T {min_after_first:.4}, \
         argmax switches {switches} in {t} iterations, second-half argmax visits R/P/S {visits:?}, \
         first winners {:?}, average-policy exploitability {:.4}",
        run.exploitability_last(),
        &winners[..12.min(t)],
        run.exploitability_average()
    );
    // Every iterate after the first is highly exploitable ...
    assert!(min_after_first >= 0.1, "BT iterate came within {min_after_first} of Nash");
    assert!(run.exploitability_last() >= 0.1);
    // ... because the crowned action keeps cycling R → P → S instead of settling.
    assert!(switches >= t / 4, "only {switches} switches");
    assert!(visits.iter().all(|&v| v > 0), "{visits:?}");

    // DNO from the same start on the same game, for the record.
    let dno = run_dno(&game, &init, &DnoTabularConfig { iterations: t, ..Default::default() }).unwrap();
    println!(
        "RPS DNO with the same T={t}: average-policy exploitability {:.4}, last iterate {:.4}",
        dno.exploitability_average(),
        dno.exploitability_last()
    );
}

#[test]
fn bt_maximiser_stays_exploitable_on_random_intransitive_games() {
    // Even its *averaged* policy stays ≥ 0.02 from Nash on every game (best-response
    // cycling is not balanced as it happens to be on RPS), while DNO's is < 0.02.
    for (n, game, seed) in intransitive_games() {
        let init: Vec<f64> = (0..n).map(|i| 1.5 * ((i as f64) - (n as f64) / 2.0) / n as f64 * 2.0).collect();
        let bt = run_bt_maximiser(&game, &init, &BtConfig { iterations: 3000, ..Default::default() }).unwrap();
        let dno = run_dno(&game, &init, &dno_cfg()).unwrap();
        println!(
            "n={n} seed={seed}: BT avg {:.4} last {:.4} | DNO avg {:.5} last {:.4}",
            bt.exploitability_average(),
            bt.exploitability_last(),
            dno.exploitability_average(),
            dno.exploitability_last()
        );
        assert!(bt.exploitability_average() >= 0.02, "n={n} seed={seed}: BT average {}", bt.exploitability_average());
        assert!(bt.exploitability_average() > 2.0 * dno.exploitability_average());
    }
}

#[test]
fn on_policy_pair_weights_converge_too_but_need_more_inner_steps() {
    // Same minimiser per iteration (see nash.rs docs), worse conditioning.
    let game = PreferenceGame::random_skew(5, 1, 0.5).unwrap();
    assert!(game.condorcet_winner().is_none());
    let init = [1.0, 0.0, -1.0, 0.5, -0.5];
    let base = DnoTabularConfig { iterations: 300, ..dno_cfg() };
    let uni = run_dno(&game, &init, &base).unwrap();
    let cfg = DnoTabularConfig { weighting: PairWeighting::PolicyProduct, inner_max_steps: 20_000, inner_tol: 1e-10, ..base };
    let onp = run_dno(&game, &init, &cfg).unwrap();
    println!(
        "T=300, weights uniform: avg exploitability {:.5}, max inner steps {}; pi_t(i)pi_t(j): {:.5}, max inner steps {}",
        uni.exploitability_average(),
        uni.max_inner_steps,
        onp.exploitability_average(),
        onp.max_inner_steps
    );
    let max_diff = uni
        .policies
        .iter()
        .zip(&onp.policies)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0f64, f64::max);
    println!("  largest policy difference over all iterates {max_diff:.2e}; on-policy final inner grad {:.1e}", onp.max_final_grad);
    assert!(max_diff < 1e-4, "{max_diff}");
    assert!((onp.exploitability_average() - uni.exploitability_average()).abs() < 1e-6);
    assert!(onp.max_inner_steps > 10 * uni.max_inner_steps);
}
