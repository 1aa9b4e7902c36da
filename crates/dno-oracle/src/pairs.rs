//! Which pairs of candidates to compare, and the small deterministic RNG used across the crate.

use crate::Item;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Pair selection (`dno annotate --compare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairSpec {
    /// Every unordered pair `(i, j)`, `i < j`: K(K-1)/2 pairs (the full preference matrix).
    All,
    /// Every non-reference candidate against every reference candidate (`is_reference`).
    VsReference,
    /// `N` distinct pairs drawn uniformly from all pairs, deterministically from (seed, prompt_id).
    /// All pairs when there are fewer than `N`.
    Random(usize),
}

impl std::str::FromStr for PairSpec {
    type Err = anyhow::Error;
    /// Parses `all`, `vs-reference` or `random:N`.
    fn from_str(s: &str) -> Result<PairSpec> {
        let s = s.trim();
        match s {
            "all" => Ok(PairSpec::All),
            "vs-reference" | "vs-ref" => Ok(PairSpec::VsReference),
            _ => {
                if let Some(n) = s.strip_prefix("random:") {
                    let n: usize = n.trim().parse().with_context(|| format!("--compare {s}: N must be a positive integer"))?;
                    if n == 0 {
                        bail!("--compare {s}: N must be at least 1");
                    }
                    Ok(PairSpec::Random(n))
                } else {
                    bail!("--compare {s}: expected all, vs-reference or random:N")
                }
            }
        }
    }
}

impl std::fmt::Display for PairSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairSpec::All => write!(f, "all"),
            PairSpec::VsReference => write!(f, "vs-reference"),
            PairSpec::Random(n) => write!(f, "random:{n}"),
        }
    }
}

/// Candidate index pairs `(a, b)` to compare for `item`, in a deterministic order.
///
/// * `All`: `(i, j)` for `i < j`, row-major.
/// * `VsReference`: `(i, r)` for each non-reference `i` and each reference `r`, in candidate order
///   (the reference is `b`, so `p_a` reads "P(sample beats the reference)"). Empty when the item
///   has no reference candidate.
/// * `Random(n)`: a seeded sample of `All`, returned in row-major order.
pub fn select_pairs(item: &Item, spec: &PairSpec, seed: u64) -> Vec<(usize, usize)> {
    let k = item.candidates.len();
    let all = || (0..k).flat_map(move |i| (i + 1..k).map(move |j| (i, j)));
    match spec {
        PairSpec::All => all().collect(),
        PairSpec::VsReference => {
            let refs: Vec<usize> = (0..k).filter(|&i| item.candidates[i].is_reference).collect();
            (0..k)
                .filter(|&i| !item.candidates[i].is_reference)
                .flat_map(|i| refs.iter().map(move |&r| (i, r)))
                .collect()
        }
        PairSpec::Random(n) => {
            let mut pairs: Vec<(usize, usize)> = all().collect();
            if pairs.len() <= *n {
                return pairs;
            }
            let mut rng = Rng::new(seed_for(seed, "pairs", &item.prompt_id));
            // Partial Fisher-Yates: the first n positions become a uniform sample.
            for i in 0..*n {
                let j = i + rng.below((pairs.len() - i) as u64) as usize;
                pairs.swap(i, j);
            }
            pairs.truncate(*n);
            pairs.sort_unstable();
            pairs
        }
    }
}

/// SplitMix64 finaliser (public-domain constant set); a good 64-bit mixer.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit seed derived from a user seed, a purpose tag and a prompt id (stable across runs and
/// platforms: SHA-256 based, not `std`'s randomised hasher).
pub fn seed_for(seed: u64, purpose: &str, prompt_id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    h.update([0u8]);
    h.update(prompt_id.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Tiny deterministic RNG (SplitMix64 stream).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }
    /// Uniform in `0..n` (`n > 0`), rejection-free multiply-shift (bias < 2^-32 for small n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}
