#!/usr/bin/env python3
"""Reference values for preference losses, following TRL's DPOTrainer.

TRL (>= 1.x) computes its losses inline in `DPOTrainer._compute_loss`, which needs a model,
a tokenized batch and TRL's fused LM head; there is no standalone loss function to call with
fixed log-probabilities. So this script re-states the formulas exactly as written in the
installed TRL source (trl/trainer/dpo_trainer.py, f_divergence_type="reverse_kl", i.e.
standard DPO) and evaluates them with torch in float64 on fixed tuples. The TRL version and the
source lines used are recorded in the output so a reviewer can check them.

  chosen_logratios   = policy_chosen_logps   - ref_chosen_logps
  rejected_logratios = policy_rejected_logps - ref_rejected_logps
  delta              = chosen_logratios - rejected_logratios
  sigmoid   (DPO):  -logsigmoid(beta * delta)
  hinge:             relu(1 - beta * delta)
  ipo:              (chosen_logratios / n_chosen - rejected_logratios / n_rejected - 1 / (2 beta))^2
                    (TRL normalizes by completion token counts n_*, clamped at >= 1;
                     with n_chosen = n_rejected = 1 this is the IPO paper's Eq. 17)
  sppo_hard:        (chosen_logratios - 0.5 / beta)^2 + (rejected_logratios + 0.5 / beta)^2
  rewards:           chosen_reward = beta * chosen_logratios, rejected_reward = beta * rejected_logratios

Usage: /work/venv-ref/bin/python scripts/make_trl_losses.py [--out PATH]
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent

# (policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, n_chosen_tokens, n_rejected_tokens)
TUPLES = [
    (-10.0, -12.0, -11.0, -11.0, 0.1, 1, 1),
    (-10.0, -12.0, -11.0, -11.0, 0.5, 1, 1),
    (-50.0, -40.0, -50.0, -40.0, 0.1, 20, 16),  # policy == reference: delta = 0
    (-35.2, -61.7, -38.9, -55.0, 0.1, 12, 25),
    (-120.5, -80.25, -110.0, -95.5, 0.05, 40, 30),  # policy prefers the rejected one
    (-5.0, -100.0, -6.0, -90.0, 1.0, 4, 50),
    (-1.5, -1.25, -1.0, -2.0, 0.01, 3, 3),
    (-200.0, -210.0, -150.0, -300.0, 0.2, 64, 64),  # large negative delta
    (-0.1, -30.0, -20.0, -0.2, 2.0, 2, 10),  # large positive delta
]


def trl_source_lines() -> dict:
    """Locate the formula lines in the installed TRL source, for provenance."""
    from trl.trainer import dpo_trainer

    src = inspect.getsource(dpo_trainer)
    lines = src.splitlines()
    wanted = {
        "sigmoid": r"per_sequence_loss = -F\.logsigmoid\(self\.beta \* delta_score\)",
        "hinge": r"per_sequence_loss = torch\.relu\(1 - self\.beta \* delta_score\)",
        "ipo": r"per_sequence_loss = \(ipo_delta - 1 / \(2 \* self\.beta\)\) \*\* 2",
        "ipo_normalization": r"chosen_avg_score = chosen_scores / chosen_mask\.sum\(dim=1\)\.clamp\(min=1\.0\)",
        "sppo_hard_winner": r"winner_margin_error = \(chosen_logratios - 0\.5 / self\.beta\) \*\* 2",
        "sppo_hard_loser": r"loser_margin_error = \(rejected_logratios \+ 0\.5 / self\.beta\) \*\* 2",
    }
    found = {}
    for key, pat in wanted.items():
        hits = [i + 1 for i, line in enumerate(lines) if re.search(pat, line)]
        if not hits:
            raise SystemExit(f"make_trl_losses: formula '{key}' not found in trl/trainer/dpo_trainer.py; "
                             "TRL changed, re-check the formulas")
        found[key] = {"line": hits[0], "text": lines[hits[0] - 1].strip()}
    return found


def losses(pc, pr, rc, rr, beta, nc, nr) -> dict:
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    chosen_logratios = t(pc) - t(rc)
    rejected_logratios = t(pr) - t(rr)
    delta = chosen_logratios - rejected_logratios
    sigmoid = -F.logsigmoid(beta * delta)
    hinge = torch.relu(1 - beta * delta)
    ipo_delta = chosen_logratios / max(nc, 1.0) - rejected_logratios / max(nr, 1.0)
    ipo = (ipo_delta - 1 / (2 * beta)) ** 2
    ipo_unnormalized = (delta - 1 / (2 * beta)) ** 2
    sppo_hard = (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    return {
        "chosen_logratio": float(chosen_logratios),
        "rejected_logratio": float(rejected_logratios),
        "delta": float(delta),
        "chosen_reward": float(beta * chosen_logratios),
        "rejected_reward": float(beta * rejected_logratios),
        "reward_accuracy": bool(chosen_logratios > rejected_logratios),
        "sigmoid": float(sigmoid),
        "hinge": float(hinge),
        "ipo": float(ipo),
        "ipo_unnormalized": float(ipo_unnormalized),
        "sppo_hard": float(sppo_hard),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "fixtures" / "reference" / "trl_losses.json")
    args = ap.parse_args()
    cases = []
    for pc, pr, rc, rr, beta, nc, nr in TUPLES:
        cases.append(
            {
                "policy_chosen_logps": pc,
                "policy_rejected_logps": pr,
                "ref_chosen_logps": rc,
                "ref_rejected_logps": rr,
                "beta": beta,
                "chosen_completion_tokens": nc,
                "rejected_completion_tokens": nr,
                **losses(pc, pr, rc, rr, beta, nc, nr),
            }
        )
    # Batch means, as TRL reports loss = per_sequence_loss.mean() over a batch (same beta needed).
    batch = [c for c in cases if c["beta"] == 0.1]
    out = {
        "producer": "scripts/make_trl_losses.py",
        "method": "formulas as written in TRL's source (trl/trainer/dpo_trainer.py, DPOTrainer._compute_loss, "
        "f_divergence_type='reverse_kl'), evaluated with torch float64; TRL has no standalone loss function "
        "callable on fixed log-probabilities in this version",
        "versions": {"trl": version("trl"), "torch": torch.__version__},
        "trl_source_lines": trl_source_lines(),
        "fields": {
            "sigmoid": "DPO loss -logsigmoid(beta*delta)",
            "ipo": "TRL's IPO: length-normalized log-ratios (divided by completion token counts)",
            "ipo_unnormalized": "IPO paper Eq. 17 with sequence-level log-ratios: (delta - 1/(2 beta))^2",
            "sppo_hard": "TRL's 'sppo_hard' (P=1 for winner, 0 for loser)",
        },
        "cases": cases,
        "batch_beta_0_1": {
            "case_indices": [i for i, c in enumerate(cases) if c["beta"] == 0.1],
            "mean_sigmoid": sum(c["sigmoid"] for c in batch) / len(batch),
            "mean_ipo": sum(c["ipo"] for c in batch) / len(batch),
            "mean_sppo_hard": sum(c["sppo_hard"] for c in batch) / len(batch),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
