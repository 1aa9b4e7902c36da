//! SentencePiece-style tokenizer of GGUF files with `tokenizer.ggml.model = "llama"` (Llama 2,
//! Mistral, Gemma, Phi-3), encoding as llama.cpp does so ids equal `llama-tokenize`'s:
//!
//! 1. The text is cut at every occurrence of a special token (control, user-defined and unknown
//!    tokens), longest token text first, each token cutting at its leftmost occurrences in the
//!    pieces left by the longer ones.
//! 2. Each remaining piece gets a leading space when `add_space_prefix` is set and it starts the
//!    text or follows a special token; spaces become `▁` (U+2581).
//! 3. Starting from single UTF-8 characters, the adjacent pair whose concatenation is the
//!    best-scored vocabulary entry is merged, repeatedly (ties: leftmost pair first).
//! 4. A symbol that is not in the vocabulary (an unknown character) becomes its UTF-8 bytes,
//!    each as the `<0xNN>` byte-fallback token.
//!
//! Decoding maps `▁` back to spaces and byte tokens back to bytes.

use anyhow::{bail, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    pub fn from_gguf(v: i64) -> Self {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Matched in the text before the merge step.
    fn is_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::UserDefined | TokenType::Unknown)
    }
}

#[derive(Debug, Clone)]
pub struct Spm {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    ids: HashMap<String, u32>,
    /// Special tokens in matching order (longest text first).
    special: Vec<u32>,
    /// Special tokens after which whitespace is dropped (llama.cpp does this for Phi-3).
    rstrip: Vec<bool>,
    byte_ids: [Option<u32>; 256],
    pub add_space_prefix: bool,
}

/// A candidate merge in the work queue: the best score first, then the leftmost.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A run of the text during merging: `start..start + len` bytes, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Clone, Copy)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

impl Spm {
    /// `tokens`, `scores` and `types` are the GGUF arrays (`scores` may be empty: all 0).
    /// `rstrip_special`: drop whitespace after special tokens, as llama.cpp does for models
    /// named Phi-3 (except after `<unk>`, `<s>` and `<|endoftext|>`).
    pub fn new(tokens: Vec<String>, scores: Vec<f32>, types: Vec<TokenType>, add_space_prefix: bool, rstrip_special: bool) -> Result<Self> {
        let n = tokens.len();
        if !scores.is_empty() && scores.len() != n {
            bail!("tokenizer.ggml.scores has {} entries for {n} tokens", scores.len());
        }
        if !types.is_empty() && types.len() != n {
            bail!("tokenizer.ggml.token_type has {} entries for {n} tokens", types.len());
        }
        let scores = if scores.is_empty() { vec![0.0; n] } else { scores };
        let types = if types.is_empty() { vec![TokenType::Normal; n] } else { types };
        // Later duplicates win, as in llama.cpp's token_to_id map.
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            ids.insert(t.clone(), i as u32);
        }
        let mut special: Vec<u32> =
            (0..n as u32).filter(|&i| types[i as usize].is_special() && !tokens[i as usize].is_empty()).collect();
        special.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let mut rstrip = vec![false; n];
        if rstrip_special {
            for &i in &special {
                rstrip[i as usize] = true;
            }
            for t in ["</s>"] {
                if let Some(&i) = ids.get(t) {
                    rstrip[i as usize] = true;
                }
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(&i) = ids.get(t) {
                    rstrip[i as usize] = false;
                }
            }
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied();
            if slot.is_none() {
                if let Ok(s) = std::str::from_utf8(&[b as u8]) {
                    *slot = ids.get(s).copied();
                }
            }
        }
        Ok(Spm { pieces: tokens, scores, types, ids, special, rstrip, byte_ids, add_space_prefix })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|s| s.as_str())
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// Token ids of `text`, special-token text parsed as the special token (no BOS/EOS added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut after_special = true;
        for frag in self.partition(text) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(t) => {
                    let mut s = String::with_capacity(t.len() + 3);
                    if self.add_space_prefix && after_special {
                        s.push(' ');
                    }
                    s.push_str(t);
                    self.encode_piece(&s.replace(' ', "\u{2581}"), &mut out)?;
                    after_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Step 1: the text cut at special tokens, longest first.
    fn partition<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        for &id in &self.special {
            let pat = self.pieces[id as usize].as_str();
            if !frags.iter().any(|f| matches!(f, Fragment::Text(t) if t.contains(pat))) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(pos) = rest.find(pat) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[pos + pat.len()..];
                    if self.rstrip[id as usize] {
                        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
                    }
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    /// Steps 3 and 4 on one escaped piece.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, ch)) in text.char_indices().enumerate() {
            let len = ch.len_utf8();
            let next = (start + len < text.len()).then_some(i + 1);
            syms.push(Symbol { start, len, prev: i.checked_sub(1), next });
        }
        if syms.is_empty() {
            return Ok(());
        }
        let mut queue = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<Bigram>, syms: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else { return };
            let (a, b) = (syms[l], syms[r]);
            let len = a.len + b.len;
            if let Some(&id) = self.ids.get(&text[a.start..a.start + len]) {
                queue.push(Bigram { score: self.scores[id as usize], left: l, right: r, len });
            }
        };
        for i in 1..syms.len() {
            push(&mut queue, &syms, Some(i - 1), Some(i));
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (syms[bg.left], syms[bg.right]);
            // Stale: one side was merged since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.len {
                continue;
            }
            syms[bg.left].len += r.len;
            syms[bg.right].len = 0;
            syms[bg.left].next = r.next;
            if let Some(n) = r.next {
                syms[n].prev = Some(bg.left);
            }
            push(&mut queue, &syms, syms[bg.left].prev, Some(bg.left));
            push(&mut queue, &syms, Some(bg.left), syms[bg.left].next);
        }
        // Every merged symbol is a vocabulary entry; a lone character may not be (byte fallback).
        let mut cur = Some(0);
        while let Some(i) = cur {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        match self.byte_ids[b as usize] {
                            Some(id) => out.push(id),
                            None => bail!("no byte-fallback token <0x{b:02X}> for {piece:?}"),
                        }
                    }
                }
            }
            cur = s.next;
        }
        Ok(())
    }

    /// Text of `ids`: `▁` as a space, byte tokens as bytes (invalid UTF-8 replaced), control and
    /// unknown tokens as their text unless `skip_special`, unused tokens as nothing. With
    /// `add_space_prefix`, the space the encoder prepended is removed.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else { continue };
            match self.types[id as usize] {
                TokenType::Control | TokenType::Unknown => {
                    if !skip_special {
                        bytes.extend_from_slice(piece.as_bytes());
                    }
                }
                TokenType::UserDefined => bytes.extend_from_slice(piece.as_bytes()),
                TokenType::Normal => bytes.extend_from_slice(piece.replace('\u{2581}', " ").as_bytes()),
                TokenType::Byte => match parse_byte_token(piece) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(piece.as_bytes()),
                },
                TokenType::Unused | TokenType::Undefined => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match text.strip_prefix(' ') {
            Some(rest) if self.add_space_prefix => rest.to_string(),
            _ => text,
        }
    }
}

/// `<0xNN>` -> NN.
fn parse_byte_token(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(add_space_prefix: bool) -> Spm {
        // id: piece, score
        let entries: &[(&str, f32, i64)] = &[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("\u{2581}", -1.0, 1),
            ("a", -2.0, 1),
            ("b", -2.0, 1),
            ("c", -2.0, 1),
            ("ab", -3.0, 1),
            ("bc", -1.5, 1),
            ("\u{2581}a", -0.5, 1),
            ("abc", -4.0, 1),
            ("<0xC3>", 0.0, 6),
            ("<0xA9>", 0.0, 6),
            ("<sep>", 0.0, 4),
        ];
        Spm::new(
            entries.iter().map(|e| e.0.to_string()).collect(),
            entries.iter().map(|e| e.1).collect(),
            entries.iter().map(|e| TokenType::from_gguf(e.2)).collect(),
            add_space_prefix,
            false,
        )
        .unwrap()
    }

    #[test]
    fn best_scored_pair_merges_first() {
        let s = vocab(false);
        // "bc" (-1.5) beats "ab" (-3), then "a"+"bc" = "abc" merges.
        assert_eq!(s.encode("abc").unwrap(), vec![10]);
        // "ab" alone
        assert_eq!(s.encode("ab").unwrap(), vec![7]);
        // "▁a" (-0.5) first, then "b"+"c" -> [▁a, bc]
        assert_eq!(s.encode(" abc").unwrap(), vec![9, 8]);
    }

    #[test]
    fn space_prefix_specials_and_byte_fallback() {
        let s = vocab(true);
        assert_eq!(s.encode("a").unwrap(), vec![9]);
        // prefix space after a special token too; "<sep>" is user-defined
        assert_eq!(s.encode("a<sep>a").unwrap(), vec![9, 13, 9]);
        assert_eq!(s.encode("<s>a").unwrap(), vec![1, 9]);
        // é = C3 A9 is not in the vocabulary: byte fallback
        assert_eq!(s.encode("é").unwrap(), vec![3, 11, 12]);
        assert_eq!(s.decode(&[3, 11, 12], false), "é");
        assert_eq!(s.decode(&[1, 9, 8], true), "abc");
        assert_eq!(s.decode(&[1, 9, 8], false), "<s> abc");
    }
}
