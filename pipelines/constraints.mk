# Settings for pipelines/Makefile in the constraint-following recipe (pipelines/recipe-constraints.sh):
# SmolLM2-135M-Instruct as pi_1, the constraint oracle (no judge server), T = 3 DNO-Prct rounds of
# K = 4 samples on fresh prompts each, greedy eval against pi_1 on 128 held-out prompts.
# `?=` throughout, so an environment variable of the same name overrides a setting.
MODEL        ?= $(HOME)/.cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf
T            ?= 3
K            ?= 4
TEMPERATURE  ?= 0.7
TOP_P        ?= 0.95
MAX_NEW      ?= 64
INCLUDE_REF  ?=
EVAL_K       ?= 1
EVAL_TEMPERATURE ?= 0
ORACLE       ?= --oracle verifier --verify constraints
EVAL_ORACLE  ?= $(ORACLE)
# Fractions of constraints met are coarse (0, 1/3, 1/2, ...), so pairs are ranked by win-rate within
# the prompt; one pair per prompt and at most 100 a round keep the training time bounded.
STRATEGY     ?= dno-prct
PAIR_FLAGS   ?= --basis win-rate --max-pairs-per-prompt 1 --limit 100
LOSS         ?= dpo
ETA          ?= 0.1
# Tuned on the recipe (README, "A real model that improves"): lr 1e-5 gave 59.4% at iteration 3,
# 2e-5 gave 64.5%, with eta 0.1, one epoch, one pair per prompt.
LR           ?= 2e-5
EPOCHS       ?= 1
BATCH        ?= 8
