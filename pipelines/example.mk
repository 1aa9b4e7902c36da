# Example settings for pipelines/Makefile (make -f pipelines/Makefile CONFIG=pipelines/example.mk).
# The real-model recipe (pipelines/recipe-smollm2.sh): SmolLM2-135M-Instruct as the policy, a
# llama.cpp judge server on 127.0.0.1:8089 (scripts/serve_judge.sh), 64 prompts, K = 4, T = 1.
RUN          = runs/smollm2
MODEL        = $(HOME)/.cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPTS      = $(RUN)/prompts.parquet
EVAL_PROMPTS = $(RUN)/prompts.parquet
T            = 1
K            = 4
MAX_NEW      = 128
INCLUDE_REF  =
# A 135M judge cannot write "[[A]]" reliably, so it answers one letter and the A/B mass of its
# first token is the preference (--logprobs); both orders are asked and averaged. With a real
# judge (a larger GGUF on the same server, vLLM, or an API), drop --template/--judge-max-tokens/--logprobs
# to use the default explain-then-verdict template, or use --mode score (the paper's annotation).
JUDGE        = --oracle judge --mode pairwise --base-url http://127.0.0.1:8089/v1 --api-model judge \
               --template pipelines/judges/pairwise-letter.txt --judge-max-tokens 1 --logprobs --top-logprobs 20 \
               --judge-temperature 0 --concurrency 2
# The 135M judge sometimes puts no A/B mass in its top-20 first tokens at all (~2% of judgments);
# those are failures, reported and left out rather than guessed (drop --allow-failures to stop instead).
ORACLE       = $(JUDGE) --compare random:3 --allow-failures
EVAL_ORACLE  = $(JUDGE) --allow-failures
# Win-rates from a weak continuous judge are close together, so best-vs-worst per prompt.
STRATEGY     = max-min
LOSS         = dpo
ETA          = 0.1
LR           = 5e-6
BATCH        = 8
