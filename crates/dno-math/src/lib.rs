//! # dno-math: the DNO maths in one small, exhaustively tested module set
//!
//! Direct Nash Optimization (Rosset et al. 2024, arXiv 2404.03715) reduces to
//! four pieces of arithmetic, each implemented here in plain `f64` Rust with
//! no tensor library, so that the training crate (burn) can test its tensor
//! versions against these functions:
//!
//! * [`loss`]: per-pair losses and their gradients with respect to the policy
//!   log-probabilities: DNO's soft-label cross-entropy (Alg. 1, Eq. 8 / Eq. 11),
//!   DNO-Prct's contrastive loss (Alg. 2, Eq. 13, i.e. DPO with β = η and
//!   reference π_t), IPO (Azar et al.), SPPO (Wu et al. Eq. 4.7 as in the
//!   official code) and SFT.
//! * [`winrate`]: the preference matrix of a prompt's candidates from judged
//!   pairs and the win-rate reward r_t(x,y) (Alg. 1 line 3; §4 implicit reward
//!   estimate).
//! * [`pairing`]: turning candidates with scores / win-rates into training
//!   pairs: DNO-Prct's large-margin rule (§5.1, App. C), max-min, soft pairs
//!   (Alg. 1), filters, replay of earlier iterations and a Table-2 summary.
//! * [`nash`]: a tabular preference game on which the DNO iteration, driven by
//!   the very same [`loss::dno_loss`], is run to (approximately) the Nash /
//!   von Neumann winner, with a Bradley-Terry reward maximiser as a contrast.
//!
//! Everything is deterministic: randomness comes from the tiny [`rng::SplitMix64`].
//! Library functions never panic on bad input; they return [`MathError`].

pub mod loss;
pub mod nash;
pub mod pairing;
pub mod rng;
pub mod winrate;

use std::fmt;

/// The one error type of this crate: a one-line message naming the offending
/// field or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MathError {
    message: String,
}

impl MathError {
    /// Builds an error from its one-line message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MathError {}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, MathError>;

/// Returns an error unless `value` is finite.
pub(crate) fn check_finite(name: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(MathError::new(format!("{name} must be finite, got {value}")))
    }
}

/// Returns an error unless `value` is a probability in [0, 1].
pub(crate) fn check_probability(name: &str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(MathError::new(format!("{name} must lie in [0, 1], got {value}")))
    }
}

/// Returns an error unless `value` is finite and strictly positive.
pub(crate) fn check_positive(name: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(MathError::new(format!("{name} must be a positive finite number, got {value}")))
    }
}

pub use loss::{BatchLoss, LossConfig, LossKind, LossOutput, PairInputs, PairTargets};
pub use pairing::{Basis, Candidate, DropCounts, Pair, PairKind, PairingConfig, PairingStrategy, PairingSummary, ValueBasis};
pub use rng::SplitMix64;
pub use winrate::{Judgment, PreferenceMatrix, WinRate};
