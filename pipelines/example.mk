# Example settings for pipelines/Makefile (make -f pipelines/Makefile CONFIG=pipelines/example.mk).
# The real-model recipe: SmolLM2-135M-Instruct as the policy, a llama.cpp judge server.
RUN          = runs/smollm2
MODEL        = $(HOME)/.cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPTS      = runs/smollm2/prompts.parquet
EVAL_PROMPTS = runs/smollm2/prompts.parquet
T            = 1
K            = 4
MAX_NEW      = 128
ORACLE       = --oracle judge --mode score --base-url http://127.0.0.1:8089/v1 --api-model judge --concurrency 2
EVAL_ORACLE  = --oracle judge --mode pairwise --base-url http://127.0.0.1:8089/v1 --api-model judge --concurrency 2
LOSS         = dpo
ETA          = 0.1
LR           = 5e-6
BATCH        = 4
