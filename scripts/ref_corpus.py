"""Fixed text corpus and chat cases shared by the reference-data scripts.

Everything here is deterministic (no randomness), so regenerating the
fixtures with the same library versions gives byte-identical files.
"""

from __future__ import annotations


def _handwritten() -> list[str]:
    return [
        # --- empty / whitespace ---
        "",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "\t\t\tindented with tabs",
        "    four leading spaces",
        "trailing spaces    ",
        "a  b   c    d     e",
        "line one\nline two\r\nline three\rline four",
        "\n\n\n\nmany newlines\n\n\n\n",
        " " * 40 + "x",
        "x" + " " * 33 + "y",
        "\t \t \n \n\t",
        "mixed\u00a0non-breaking\u2003em-space\u3000ideographic space",
        # --- plain English ---
        "Hello",
        "Hello world",
        "Hello, world!",
        "hello world",
        "HELLO WORLD",
        "The quick brown fox jumps over the lazy dog.",
        "I'm sure you'll like it, won't you? They've said we'd go.",
        "It's a dog's life; the dogs' bowls are empty.",
        "Don't DON'T don't dOn'T",
        "What is the capital of France?",
        "Direct Nash Optimization teaches language models to self-improve with general preferences.",
        "A preference oracle P(y ≻ y' | x) returns the probability that y beats y'.",
        "Once upon a time, in a land far, far away, there lived a small language model.",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "e.g. i.e. etc. vs. Mr. Mrs. Dr. St. a.m. p.m.",
        "U.S.A. U.K. E.U. N.A.S.A.",
        # --- digits and numbers ---
        "0",
        "7",
        "42",
        "123",
        "1234",
        "12345",
        "123456789",
        "12345678901234567890",
        "3.14159265358979323846264338327950288419716939937510",
        "-273.15",
        "+1 (555) 010-9999",
        "1,000,000",
        "1.000.000,50",
        "1e-8 2.5E+10 0x1F 0b1011 0o777",
        "In 2024, 7 of 10 runs (70%) finished in 3.5h.",
        "version 1.2.3-rc.4+build.567",
        "2026-11-22T14:37:41Z",
        "192.168.0.1:8080",
        "٠١٢٣٤٥٦٧٨٩ (Arabic-Indic digits)",
        "①②③ ⅣⅤⅥ ½ ¾ ²³",
        # --- punctuation and symbols ---
        "!!!",
        "???!!!...",
        "...",
        "—–-",
        "«quoted» “curly” ‘single’ \"straight\" 'single'",
        "(parentheses) [brackets] {braces} <angles>",
        "@user #hashtag $100 %50 ^caret &amp *star",
        "a/b\\c|d~e`f",
        "=== *** --- ___ +++",
        "-> => <= >= != == === !== ::",
        "©®™ §¶ †‡ •…",
        "€100 £50 ¥1000 ₹20 ₿0.5",
        # --- accents / Latin scripts ---
        "café naïve résumé façade coöperate",
        "Ça va? Où est la bibliothèque? Très bien, merci.",
        "¿Dónde está el baño? ¡Muy bien!",
        "Grüße aus München, schöne Straße.",
        "Ærøskøbing, Åland, Øresund",
        "Zażółć gęślą jaźń",
        "Příliš žluťoučký kůň úpěl ďábelské ódy",
        "İstanbul ılık ğüşöç",
        "Tiếng Việt có dấu",
        "e\u0301 (combining acute) vs \u00e9 (precomposed)",
        "ﬁ ﬂ ligatures and ＦＵＬＬＷＩＤＴＨ letters",
        # --- other scripts ---
        "Привет, мир! Как дела?",
        "Γειά σου Κόσμε",
        "שלום עולם",
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "안녕하세요 세계",
        "こんにちは世界",
        "カタカナとひらがなと漢字",
        "你好，世界！",
        "我爱自然语言处理。",
        "机器学习是人工智能的一个分支。",
        "中文English混合text測試",
        "繁體中文測試：臺灣、香港",
        "ⓤⓝⓘⓒⓞⓓⓔ 𝓯𝓪𝓷𝓬𝔂 𝕥𝕖𝕩𝕥",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝",
        "ሰላም ልዑል",
        "Բարեւ աշխարհ",
        "ᚠᚢᚦᚨᚱᚲ runes",
        # --- emoji ---
        "😀",
        "👍🏽",
        "👨‍👩‍👧‍👦",
        "🇫🇷🇯🇵🇺🇸",
        "I love 🍕 and 🍣!",
        "🔥🔥🔥 lit 🔥🔥🔥",
        "❤️ ♥ ❤",
        "🤖 + 🧠 = 💡",
        "emoji at end 🎉",
        "⚡️⏰☀️⛄",
        # --- code ---
        "def f(x):\n    return x * 2\n",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
        "let v: Vec<u32> = (0..10).map(|i| i * i).collect();",
        "impl<T: Clone + Send> Trait for Foo<'a, T> where T: 'static {}",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
        "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
        "const x = async () => { await fetch('/api'); };",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "<div class=\"row\"><span id='a'>text</span></div>",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
        "key: value\nlist:\n  - one\n  - two\n",
        "[package]\nname = \"dno\"\nversion = \"0.1.0\"\n",
        "#!/usr/bin/env bash\nset -euo pipefail\necho \"$HOME\" | tr a-z A-Z\n",
        "x = [i**2 for i in range(10) if i % 2 == 0]",
        "\tif (x) {\n\t\treturn y;\n\t}\n",
        "# Title\n\n## Subtitle\n\n- item *emph* **strong** `code`\n",
        "```python\nprint('hi')\n```",
        "$$\\sum_{i=1}^{n} \\log \\sigma(\\beta (r_w - r_l))$$",
        "\\begin{equation} \\pi^* = \\arg\\max_\\pi \\mathbb{E}[r] \\end{equation}",
        "camelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case",
        "a==b&&c!=d||e<=f",
        "https://example.com/path?query=1&other=two#frag",
        "user.name+tag@example.co.uk",
        "C:\\Users\\name\\Documents\\file.txt",
        "/usr/local/bin/python3 --version",
        "0xDEADBEEF 0xcafebabe",
        "SGVsbG8gd29ybGQ=",
        "a1b2c3d4e5f6",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        # --- special tokens inside text ---
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_start|>user\nHello<|im_end|>\n",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "text before<|im_end|>text after",
        "<|im_start|><|im_end|><|endoftext|>",
        "< |im_start| > <|im_start <im_start|>",
        "<s> </s> <unk> <pad> [CLS] [SEP]",
        "<|endoftext|>The end.<|endoftext|>",
        "<|IM_START|> case matters",
        "<file_sep><repo_name><filename>",
        # --- contractions / casing edge cases ---
        "'s 's 't 're 've 'm 'll 'd",
        "I'M YOU'RE WE'VE THEY'LL HE'D",
        "don’t (curly apostrophe)",
        "rock'n'roll o'clock",
        "ALLCAPSWORDWITHOUTSPACES",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababababababababababababab",
        "!@#$%^&*()_+-=[]{}|;':\",./<>?",
        "\u200b zero width space \u200d zwj \ufeff bom",
        "control\x07bell\x1bescape\x00nul",
        "\u2028line separator\u2029paragraph separator",
        "soft\u00adhyphen",
        "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ",
        "∀x∈ℝ: x²≥0 ⇒ √(x²)=|x|",
        "→ ← ↑ ↓ ↔ ⇄",
        "┌─┬─┐\n│a│b│\n└─┴─┘",
        "░▒▓█",
    ]


def _generated() -> list[str]:
    out: list[str] = []
    # whitespace runs of varying length in front of/inside words (pre-tokenizer edge cases)
    for n in (1, 2, 3, 5, 8, 16, 31):
        out.append(" " * n + "word")
        out.append("word" + " " * n + "word")
    for n in (1, 2, 3, 7):
        out.append("a" + "\t" * n + "b")
        out.append("a" + "\n" * n + "b")
    # numbers of every length 1..24 (digit-splitting behaviour)
    for n in range(1, 25):
        out.append("".join(str((i * 7 + 3) % 10) for i in range(n)))
    # numbers embedded in words
    out += ["abc123def", "v2", "GPT4o", "x86_64", "H2O", "CO2e", "3D", "4K60fps"]
    # repeated punctuation lengths
    for ch in ".,!?-=*#":
        out.append(ch * 9)
    # short multi-sentence paragraph
    out.append(
        "Large language models are typically post-trained with reinforcement learning "
        "from human feedback. DNO instead optimizes against a general preference "
        "function, iterating between sampling, annotating, pairing and training. "
        "Each iteration uses a batched on-policy contrastive loss."
    )
    return out


def corpus() -> list[str]:
    items = _handwritten() + _generated()
    seen: set[str] = set()
    unique = []
    for s in items:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


def chat_cases() -> list[dict]:
    """Chat conversations, with and without system messages, multi-turn included."""
    return [
        {"name": "single_user", "messages": [{"role": "user", "content": "Hello!"}]},
        {
            "name": "system_and_user",
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "What is 2 + 2?"},
            ],
        },
        {
            "name": "user_unicode",
            "messages": [{"role": "user", "content": "Traduis «bonjour» en japonais: こんにちは? 😀"}],
        },
        {
            "name": "multi_turn",
            "messages": [
                {"role": "user", "content": "Name a prime number."},
                {"role": "assistant", "content": "7 is a prime number."},
                {"role": "user", "content": "Name another one."},
            ],
        },
        {
            "name": "system_multi_turn",
            "messages": [
                {"role": "system", "content": "You answer in one sentence."},
                {"role": "user", "content": "Why is the sky blue?"},
                {"role": "assistant", "content": "Because of Rayleigh scattering."},
                {"role": "user", "content": "And sunsets?"},
            ],
        },
        {
            "name": "code_question",
            "messages": [
                {"role": "user", "content": "Write a Python function that reverses a string.\n\n```python\ndef rev(s):\n```"}
            ],
        },
        {
            "name": "whitespace_content",
            "messages": [{"role": "user", "content": "  leading and trailing spaces  \n\n"}],
        },
        {
            "name": "empty_system",
            "messages": [
                {"role": "system", "content": ""},
                {"role": "user", "content": "Say hi."},
            ],
        },
        {
            "name": "special_tokens_in_content",
            "messages": [{"role": "user", "content": "Explain what <|im_end|> means."}],
        },
        {
            "name": "long_system",
            "messages": [
                {
                    "role": "system",
                    "content": "You are a careful judge. Compare two responses and answer with A or B only. "
                    "Consider helpfulness, correctness and conciseness.",
                },
                {"role": "user", "content": "Question: capital of Italy?\nA: Rome\nB: Milan"},
            ],
        },
    ]


def greedy_prompts() -> list[dict]:
    """Chat prompts for greedy generation."""
    return [
        {"name": "capital", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {"name": "poem", "messages": [{"role": "user", "content": "Write a short poem about the sea."}]},
        {
            "name": "math",
            "messages": [
                {"role": "system", "content": "You are a helpful math tutor."},
                {"role": "user", "content": "What is 17 times 23? Explain step by step."},
            ],
        },
        {
            "name": "code",
            "messages": [{"role": "user", "content": "Write a Python function that checks whether a number is prime."}],
        },
        {"name": "list", "messages": [{"role": "user", "content": "List three fruits that are red."}]},
        {
            "name": "summarize",
            "messages": [
                {
                    "role": "user",
                    "content": "Summarize in one sentence: The cat sat on the mat all day because the sun "
                    "made the mat warm, and the cat enjoyed the warmth.",
                }
            ],
        },
        {"name": "french", "messages": [{"role": "user", "content": "Translate to French: Good morning, how are you?"}]},
        {
            "name": "judge",
            "messages": [
                {"role": "system", "content": "You are a strict judge. Answer with A or B."},
                {
                    "role": "user",
                    "content": "Which answer is better for 'What is 2+2?'\nA: 4\nB: 5\nAnswer:",
                },
            ],
        },
        {"name": "greeting", "messages": [{"role": "user", "content": "Hi! Who are you?"}]},
        {
            "name": "multi_turn",
            "messages": [
                {"role": "user", "content": "Give me a color."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Now give me an animal of that color."},
            ],
        },
    ]


def logits_prompts() -> list[dict]:
    """Prompts for last-position logits. Each is either raw text or a chat."""
    return [
        {"name": "raw_text", "text": "The capital of France is"},
        {"name": "chat_capital", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {
            "name": "chat_system_code",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "def add(a, b):"},
            ],
        },
    ]
