//! Prompt tokenizers: a Hugging Face `tokenizer.json` (as shipped with a Pythia
//! checkpoint), or a word-level vocabulary built from the prompt template and the label
//! vocabulary when no pretrained tokenizer is given; and left-padded prompt batches.
//!
//! ```
//! use calmflow_tokenize::{PromptTokenizer, WordTokenizer, left_pad};
//! let words = WordTokenizer::from_texts(["Generate a B cell:", "Generate a T cell:"]);
//! let tok = PromptTokenizer::Word(words);
//! let a = tok.encode("Generate a B cell:").unwrap();
//! let b = tok.encode("a T cell:").unwrap();
//! assert_eq!(a.len(), 5); // "Generate" "a" "B" "cell" ":"
//! let batch = left_pad(&[a, b], tok.pad_id());
//! assert_eq!((batch.batch, batch.len), (2, 5));
//! assert_eq!(batch.padding[5..], [true, false, false, false, false]);
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::{Result, TokenizeError};

/// Reserved ids of the word-level tokenizer.
const PAD: &str = "<pad>";
const UNK: &str = "<unk>";

/// Punctuation split off words as tokens of their own (inner `+`, `/`, `-` stay: they are
/// part of labels such as `CD4+/CD25`).
fn is_split_punctuation(c: char) -> bool {
    matches!(
        c,
        ':' | ',' | ';' | '.' | '!' | '?' | '(' | ')' | '"' | '\''
    )
}

/// A word-level vocabulary: whitespace-separated words with leading and trailing
/// punctuation split off. Id 0 is padding and id 1 stands for words it never saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordTokenizer {
    vocab: Vec<String>,
    index: HashMap<String, u32>,
}

impl WordTokenizer {
    /// The vocabulary of every word in `texts`, sorted (the same texts give the same ids
    /// in any order).
    pub fn from_texts<I, S>(texts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut words: Vec<String> = texts
            .into_iter()
            .flat_map(|t| split_words(t.as_ref()).collect::<Vec<_>>())
            .collect();
        words.sort();
        words.dedup();
        let vocab = [PAD.to_string(), UNK.to_string()]
            .into_iter()
            .chain(words.into_iter().filter(|w| w != PAD && w != UNK))
            .collect();
        Self::from_vocab(vocab).expect("the reserved tokens lead the vocabulary")
    }

    /// A tokenizer with this vocabulary (`vocab[0]` must be `<pad>`, `vocab[1]` `<unk>`,
    /// no duplicates).
    pub fn from_vocab(vocab: Vec<String>) -> Result<Self> {
        if vocab.len() < 2 || vocab[0] != PAD || vocab[1] != UNK {
            return Err(TokenizeError::Tokenizer {
                source_name: "word vocabulary".into(),
                message: format!("must start with `{PAD}`, `{UNK}`"),
            });
        }
        let mut index = HashMap::with_capacity(vocab.len());
        for (i, w) in vocab.iter().enumerate() {
            if index.insert(w.clone(), i as u32).is_some() {
                return Err(TokenizeError::Tokenizer {
                    source_name: "word vocabulary".into(),
                    message: format!("`{w}` occurs twice"),
                });
            }
        }
        Ok(Self { vocab, index })
    }

    /// The words, by id.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    /// Token ids of `text`; unknown words map to the `<unk>` id 1.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        split_words(text)
            .map(|w| self.index.get(&w).copied().unwrap_or(1))
            .collect()
    }
}

fn split_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().flat_map(|word| {
        let mut out = Vec::new();
        let start = word
            .find(|c| !is_split_punctuation(c))
            .unwrap_or(word.len());
        let end = word.rfind(|c| !is_split_punctuation(c)).map_or(start, |i| {
            i + word[i..].chars().next().map_or(1, char::len_utf8)
        });
        out.extend(word[..start].chars().map(String::from));
        if start < end {
            out.push(word[start..end].to_string());
        }
        out.extend(word[end.max(start)..].chars().map(String::from));
        out
    })
}

/// A Hugging Face tokenizer read from a `tokenizer.json` (no network access: the file
/// must be local).
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    pad_id: u32,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HfTokenizer(vocab {}, pad {})",
            self.inner.get_vocab_size(true),
            self.pad_id
        )
    }
}

impl HfTokenizer {
    /// Reads `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TokenizeError::Tokenizer {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses the JSON of a `tokenizer.json`; `source_name` names it in errors.
    pub fn from_json(json: &str, source_name: &str) -> Result<Self> {
        let refused = |message: String| TokenizeError::Tokenizer {
            source_name: source_name.to_string(),
            message: format!("not a Hugging Face tokenizer.json: {message}"),
        };
        // The tokenizers crate panics on some malformed sections (found by `cargo xtask
        // fuzz`, e.g. a damaged value inside "normalizer") instead of returning its error.
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_str(json))
            .map_err(|payload| {
                refused(
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the tokenizers crate failed to parse it".into()),
                )
            })?
            .map_err(|e| refused(e.to_string()))?;
        // The padding id never reaches attention (padded keys are masked); it only has to
        // be a valid row of the embedding table.
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["<|padding|>", "<pad>", "[PAD]", "<|endoftext|>"]
                    .iter()
                    .find_map(|t| inner.token_to_id(t))
            })
            .unwrap_or(0);
        Ok(Self { inner, pad_id })
    }

    /// The JSON that [`HfTokenizer::from_json`] reads back.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| TokenizeError::Tokenizer {
                source_name: "tokenizer".into(),
                message: e.to_string(),
            })
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizeError::Tokenizer {
                source_name: "tokenizer".into(),
                message: format!("cannot encode {text:?}: {e}"),
            })
    }
}

/// Either kind of prompt tokenizer.
#[derive(Debug, Clone)]
pub enum PromptTokenizer {
    /// The built-in word-level tokenizer.
    Word(WordTokenizer),
    /// A Hugging Face `tokenizer.json`.
    HuggingFace(Box<HfTokenizer>),
}

/// What a checkpoint stores to rebuild a [`PromptTokenizer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenizerSpec {
    /// The word list of a [`WordTokenizer`].
    Word {
        /// Words by id.
        vocab: Vec<String>,
    },
    /// The full `tokenizer.json`.
    HuggingFace {
        /// Its JSON text.
        json: String,
    },
}

impl PromptTokenizer {
    /// Token ids of `text`; an empty result is an error (a prompt must say something).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let ids = match self {
            Self::Word(w) => w.encode(text),
            Self::HuggingFace(h) => h.encode(text)?,
        };
        if ids.is_empty() {
            return Err(TokenizeError::Tokenizer {
                source_name: "prompt".into(),
                message: format!("{text:?} encodes to no tokens"),
            });
        }
        Ok(ids)
    }

    /// Rows the token-embedding table needs (largest id + 1).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Word(w) => w.vocab.len(),
            Self::HuggingFace(h) => h.inner.get_vocab_size(true),
        }
    }

    /// The id used for left padding.
    pub fn pad_id(&self) -> u32 {
        match self {
            Self::Word(_) => 0,
            Self::HuggingFace(h) => h.pad_id,
        }
    }

    /// The serialisable description.
    pub fn spec(&self) -> Result<TokenizerSpec> {
        Ok(match self {
            Self::Word(w) => TokenizerSpec::Word {
                vocab: w.vocab.clone(),
            },
            Self::HuggingFace(h) => TokenizerSpec::HuggingFace { json: h.to_json()? },
        })
    }

    /// Rebuilds from a [`TokenizerSpec`].
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Self> {
        Ok(match spec {
            TokenizerSpec::Word { vocab } => Self::Word(WordTokenizer::from_vocab(vocab.clone())?),
            TokenizerSpec::HuggingFace { json } => {
                Self::HuggingFace(Box::new(HfTokenizer::from_json(json, "stored tokenizer")?))
            }
        })
    }
}

/// Prompts padded on the left to one length, so that every prompt ends right before the
/// first flow token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptBatch {
    /// Number of prompts.
    pub batch: usize,
    /// Padded length.
    pub len: usize,
    /// Token ids, row-major `batch × len`.
    pub ids: Vec<u32>,
    /// `true` where a position is padding (masked out of attention).
    pub padding: Vec<bool>,
}

/// Left-pads `prompts` with `pad_id`.
pub fn left_pad(prompts: &[Vec<u32>], pad_id: u32) -> PromptBatch {
    let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * len);
    let mut padding = Vec::with_capacity(prompts.len() * len);
    for p in prompts {
        let pad = len - p.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()));
        padding.extend(std::iter::repeat_n(true, pad).chain(std::iter::repeat_n(false, p.len())));
    }
    PromptBatch {
        batch: prompts.len(),
        len,
        ids,
        padding,
    }
}

impl PromptBatch {
    /// The ids `(batch, len)` and, when any position is padded, the padding mask.
    pub fn tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Option<Tensor<B, 2, Bool>>) {
        let ids: Vec<i64> = self.ids.iter().map(|&i| i64::from(i)).collect();
        let ids = Tensor::from_data(TensorData::new(ids, [self.batch, self.len]), device);
        let mask = self.padding.iter().any(|&p| p).then(|| {
            Tensor::from_data(
                TensorData::new(self.padding.clone(), [self.batch, self.len]),
                device,
            )
        });
        (ids, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_punctuation_split_as_documented() {
        let w: Vec<String> = split_words("  Generate a CD4+/CD25 T-cell (phase: G2M).").collect();
        assert_eq!(
            w,
            [
                "Generate",
                "a",
                "CD4+/CD25",
                "T-cell",
                "(",
                "phase",
                ":",
                "G2M",
                ")",
                "."
            ]
        );
        assert_eq!(split_words("::").collect::<Vec<_>>(), [":", ":"]);
    }

    #[test]
    fn word_ids_are_sorted_order_and_unknown_words_map_to_unk() {
        let t = WordTokenizer::from_texts(["b a", "c a:"]);
        assert_eq!(t.vocab(), [PAD, UNK, ":", "a", "b", "c"]);
        assert_eq!(t.encode("a b c: zebra"), [3, 4, 5, 2, 1]);
        let again = WordTokenizer::from_texts(["c a:", "b a"]);
        assert_eq!(again, t);
        assert!(WordTokenizer::from_vocab(vec!["x".into()]).is_err());
        assert!(
            WordTokenizer::from_vocab(vec![PAD.into(), UNK.into(), "a".into(), "a".into()])
                .is_err()
        );
        let spec = PromptTokenizer::Word(t.clone()).spec().unwrap();
        let PromptTokenizer::Word(back) = PromptTokenizer::from_spec(&spec).unwrap() else {
            panic!("a word spec rebuilds a word tokenizer")
        };
        assert_eq!(back, t);
        assert!(PromptTokenizer::Word(t).encode("   ").is_err());
    }

    /// A byte-level BPE `tokenizer.json` (GPT-NeoX's kind) written by hand: "hello" merges
    /// to one token through `h e`, `l l`, `he ll`, `hell o`; "Ġworld" has no merges.
    const BPE_JSON: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [{"id": 12, "content": "<|padding|>", "single_word": false,
        "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": null,
      "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7,
                  "he": 8, "ll": 9, "hell": 10, "hello": 11, "<|padding|>": 12},
        "merges": ["h e", "l l", "he ll", "hell o"]}
    }"#;

    #[test]
    fn hugging_face_bpe_json_encodes_and_survives_a_spec_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, BPE_JSON).unwrap();
        let tok = PromptTokenizer::HuggingFace(Box::new(HfTokenizer::from_file(&path).unwrap()));
        assert_eq!(tok.encode("hello world").unwrap(), [11, 4, 5, 3, 6, 2, 7]);
        assert_eq!(tok.vocab_size(), 13);
        assert_eq!(tok.pad_id(), 12);
        let back = PromptTokenizer::from_spec(&tok.spec().unwrap()).unwrap();
        assert_eq!(back.encode("hello hello").unwrap(), [11, 4, 11]);
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        let e = HfTokenizer::from_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("not a Hugging Face"),
            "{e}"
        );
        assert!(HfTokenizer::from_file(dir.path().join("absent.json")).is_err());
    }

    #[test]
    fn left_padding_aligns_prompt_ends() {
        let b = left_pad(&[vec![5, 6, 7], vec![8]], 0);
        assert_eq!((b.batch, b.len), (2, 3));
        assert_eq!(b.ids, [5, 6, 7, 0, 0, 8]);
        assert_eq!(b.padding, [false, false, false, true, true, false]);
        let (ids, mask) = b.tensors::<burn::backend::NdArray<f32>>(&Default::default());
        assert_eq!(ids.dims(), [2, 3]);
        assert!(mask.is_some());
        let (_, none) =
            left_pad(&[vec![1, 2]], 0).tensors::<burn::backend::NdArray<f32>>(&Default::default());
        assert!(none.is_none());
    }
}
