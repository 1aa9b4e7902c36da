#!/usr/bin/env python3
"""Write the constraint-following prompt set under fixtures/constraints/ (stdlib only).

Everyday short tasks of the kind SmolLM2-135M-Instruct can attempt, each with 1-3 verifiable
constraints (the JSON format of schemas/constraints.md) that the prompt states in plain words.
Tasks, topics and phrasings are this project's own templates; nothing is copied from a benchmark.
The output is deterministic for the seed:

    python3 scripts/make_constraint_prompts.py            # train.jsonl (400) + eval.jsonl (128)

Each line: {"prompt_id", "prompt", "constraints": [...]}, read by
`dno prompts import FILE --constraints-field constraints`.
"""

import argparse
import json
import random
from pathlib import Path

# (task template, topics). {t} is the topic; every task asks for something short.
TASKS = [
    ("Write a short note to a neighbour about {t}.", [
        "a parcel you took in for them", "a noisy party next Saturday", "their cat sleeping in your garden",
        "borrowing a ladder", "a leak from their gutter", "a street clean-up this weekend",
        "a lost set of keys", "watering their plants while they are away"]),
    ("List tips for {t}.", [
        "saving money on groceries", "sleeping better", "keeping a small garden", "learning to cook",
        "staying focused while studying", "packing for a weekend trip", "keeping a bike in good shape",
        "making friends in a new town", "drinking more water", "keeping a tidy desk"]),
    ("Explain to a child {t}.", [
        "why the sky is blue", "how rain forms", "why we need sleep", "how plants grow from seeds",
        "why the moon changes shape", "how bees make honey", "what a volcano is", "why leaves fall in autumn"]),
    ("Write a short thank-you message to {t}.", [
        "a friend who helped you move", "a teacher at the end of the year", "a colleague who covered your shift",
        "your grandmother for a birthday gift", "a doctor who helped you", "a neighbour who fixed your fence"]),
    ("Describe {t}.", [
        "a calm morning by a lake", "your favourite meal", "a busy market on a Saturday", "a walk in the forest",
        "a rainy afternoon at home", "a small coffee shop", "the view from a hill", "a summer evening in a park"]),
    ("Give a short answer: {t}", [
        "what is a good way to start the day?", "why is exercise useful?", "how can someone learn a new language?",
        "what makes a good friend?", "why should people recycle?", "how do you make a cup of tea?",
        "what should you bring to a picnic?", "why is reading good for you?"]),
    ("Write a short invitation to {t}.", [
        "a birthday picnic in the park", "a board game night", "a community book club", "a family dinner",
        "a charity bake sale", "a morning run with friends"]),
    ("Write a short product description for {t}.", [
        "a reusable water bottle", "a wooden cutting board", "a warm winter hat", "a small desk lamp",
        "a canvas shopping bag", "a pair of running shoes", "a ceramic coffee mug"]),
    ("Write a short story about {t}.", [
        "a dog who finds a lost ball", "a girl who plants a tree", "a baker who runs out of flour",
        "a robot learning to paint", "a boy who is afraid of the dark", "a cat on a rainy day"]),
    ("Write a short message asking {t}.", [
        "your manager for a day off", "a shop about opening hours", "a friend to return a book",
        "a landlord to fix the heating", "a librarian for a book recommendation"]),
    ("Summarise in simple words {t}.", [
        "why people keep pets", "what a healthy breakfast looks like", "how to plan a small party",
        "why walking is good exercise", "how to care for a houseplant"]),
    ("Write a short review of {t}.", [
        "a new pizza place in town", "a film you watched last week", "a walking trail near your home",
        "a museum you visited", "a book about the sea"]),
]

# Keywords a response can plausibly use, per task (index into TASKS) or general.
GENERAL_KEYWORDS = ["happy", "today", "friend", "simple", "time", "good", "help", "morning", "water", "small"]
END_PHRASES = ["Have a nice day.", "Thank you!", "See you soon.", "That is all.", "Best wishes."]
START_WORDS = ["Hello", "Dear", "Today", "Yes", "First", "Imagine"]
AVOID_WORDS = ["very", "really", "thing", "just", "nice"]


def keyword_for(topic, rng):
    """A keyword taken from the topic itself (the response is likely to need it) or a common word."""
    words = [w.strip("?,.").lower() for w in topic.split() if len(w.strip("?,.")) >= 4]
    if words and rng.random() < 0.7:
        return rng.choice(words)
    return rng.choice(GENERAL_KEYWORDS)


def constraint(kind, topic, rng):
    """(constraint JSON object, instruction sentence) for a kind."""
    if kind == "word_count":
        lo, hi = rng.choice([(10, 40), (15, 50), (20, 60), (5, 30)])
        if rng.random() < 0.5:
            return {"kind": kind, "max": hi}, f"Use at most {hi} words."
        return {"kind": kind, "min": lo, "max": hi}, f"Use between {lo} and {hi} words."
    if kind == "sentence_count":
        n = rng.choice([2, 3, 4])
        return {"kind": kind, "max": n}, f"Answer in at most {n} sentences."
    if kind == "include_keywords":
        w = keyword_for(topic, rng)
        return {"kind": kind, "words": [w]}, f'Include the word "{w}".'
    if kind == "avoid_keywords":
        w = rng.choice(AVOID_WORDS)
        return {"kind": kind, "words": [w]}, f'Do not use the word "{w}".'
    if kind == "lowercase":
        return {"kind": kind}, "Write everything in lowercase letters, with no capital letters at all."
    if kind == "uppercase":
        return {"kind": kind}, "Write everything in CAPITAL LETTERS."
    if kind == "no_commas":
        return {"kind": kind}, "Do not use any commas."
    if kind == "bullet_count":
        n = rng.choice([2, 3, 4])
        return {"kind": kind, "count": n}, f'Give exactly {n} bullet points, each on its own line starting with "- ".'
    if kind == "paragraph_count":
        n = rng.choice([2, 3])
        return {"kind": kind, "count": n}, f"Write exactly {n} paragraphs separated by a blank line."
    if kind == "ends_with":
        p = rng.choice(END_PHRASES)
        return {"kind": kind, "phrase": p}, f'End your answer with the exact phrase "{p}"'
    if kind == "starts_with":
        w = rng.choice(START_WORDS)
        return {"kind": kind, "word": w}, f'Start your answer with the word "{w}".'
    if kind == "json":
        return {"kind": kind}, 'Answer only with valid JSON, for example {"answer": "..."}.'
    if kind == "title":
        return {"kind": kind}, "Give your answer a title wrapped in double angle brackets, like <<My Title>>."
    if kind == "placeholders":
        n = rng.choice([1, 2])
        s = "a placeholder" if n == 1 else f"at least {n} placeholders"
        return {"kind": kind, "min": n}, f"Include {s} in square brackets, such as [name]."
    if kind == "ascii_only":
        return {"kind": kind}, "Use only plain English letters and punctuation (no special symbols or emoji)."
    raise ValueError(kind)


# How often each kind is drawn: the attainable-but-not-trivial ones most.
WEIGHTS = {
    "word_count": 10, "sentence_count": 6, "include_keywords": 10, "avoid_keywords": 4, "lowercase": 8,
    "uppercase": 2, "no_commas": 5, "bullet_count": 6, "paragraph_count": 3, "ends_with": 8,
    "starts_with": 7, "json": 2, "title": 5, "placeholders": 4, "ascii_only": 2,
}
# Pairs that cannot (or should not) be asked together.
CONFLICTS = [
    {"lowercase", "uppercase"}, {"json", "bullet_count"}, {"json", "paragraph_count"}, {"json", "ends_with"},
    {"json", "starts_with"}, {"json", "title"}, {"bullet_count", "paragraph_count"}, {"json", "sentence_count"},
    {"uppercase", "lowercase"}, {"json", "uppercase"}, {"json", "placeholders"},
]


def draw_kinds(rng):
    n = rng.choices([1, 2, 3], weights=[3, 4, 3])[0]
    kinds = []
    while len(kinds) < n:
        k = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        if k in kinds or any({k, j} in CONFLICTS for j in kinds):
            continue
        kinds.append(k)
    return kinds


def make(seed, n_train, n_eval):
    rng = random.Random(seed)
    combos = [(task, topic) for task, topics in TASKS for topic in topics]
    seen, rows = set(), []
    while len(rows) < n_train + n_eval:
        task, topic = rng.choice(combos)
        kinds = draw_kinds(rng)
        made = [constraint(k, topic, rng) for k in kinds]
        prompt = " ".join([task.format(t=topic)] + [m[1] for m in made])
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"prompt": prompt, "constraints": [m[0] for m in made]})
    rng.shuffle(rows)
    train = [{"prompt_id": f"cf-train-{i:04d}", **r} for i, r in enumerate(rows[:n_train])]
    evals = [{"prompt_id": f"cf-eval-{i:04d}", **r} for i, r in enumerate(rows[n_train:])]
    return train, evals


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "fixtures" / "constraints"))
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--eval", type=int, default=128)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, evals = make(a.seed, a.train, a.eval)
    for name, rows in [("train.jsonl", train), ("eval.jsonl", evals)]:
        with open(out / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    kinds = {}
    for r in train + evals:
        for c in r["constraints"]:
            kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
    print(f"wrote {len(train)} train and {len(evals)} eval prompts to {out}; constraints per kind: {dict(sorted(kinds.items()))}")


if __name__ == "__main__":
    main()
