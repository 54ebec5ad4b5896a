//! Prompt templates with named fields, filled from a cell's condition labels (docs/method.md §8).
//!
//! `{name}` is a field, `{{` and `}}` are literal braces.
//!
//! ```
//! use calmflow_tokenize::PromptTemplate;
//! let t = PromptTemplate::parse("Generate a {cell_type} cell in phase {phase}: ").unwrap();
//! assert_eq!(t.fields(), ["cell_type", "phase"]);
//! let p = t.fill(&["cell_type", "phase"], &["CD14+ Monocyte", "S"]).unwrap();
//! assert_eq!(p, "Generate a CD14+ Monocyte cell in phase S: ");
//! ```

use crate::{Result, TokenizeError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(String),
}

/// A parsed prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    text: String,
    pieces: Vec<Piece>,
}

impl PromptTemplate {
    /// Parses `text`; an unclosed `{`, a stray `}` or an empty or malformed field name is
    /// an error.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |message: String| TokenizeError::Template {
            template: text.to_string(),
            message,
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, ch))
                                if ch.is_alphanumeric() || ch == '_' || ch == '-' || ch == '.' =>
                            {
                                name.push(ch)
                            }
                            Some((i, ch)) => {
                                return Err(bad(format!(
                                    "character {ch:?} at byte {i} cannot be part of a field name \
                                     (use {{{{ for a literal brace)"
                                )));
                            }
                            None => {
                                return Err(bad(format!("the `{{` at byte {at} is never closed")));
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(bad(format!("empty field name at byte {at}")));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(name));
                }
                '}' => {
                    return Err(bad(format!(
                        "stray `}}` at byte {at} (use }}}} for a literal brace)"
                    )));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self {
            text: text.to_string(),
            pieces,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The field names in order of first appearance.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.pieces {
            if let Piece::Field(f) = p
                && !out.contains(&f.as_str())
            {
                out.push(f);
            }
        }
        out
    }

    /// The literal text between fields (for building a vocabulary).
    pub fn literals(&self) -> Vec<&str> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                Piece::Field(_) => None,
            })
            .collect()
    }

    /// Fills the fields: `values[i]` is the value of field `names[i]`. Every field of the
    /// template must be named; extra names are ignored.
    pub fn fill<S: AsRef<str>, V: AsRef<str>>(&self, names: &[S], values: &[V]) -> Result<String> {
        if names.len() != values.len() {
            return Err(TokenizeError::Template {
                template: self.text.clone(),
                message: format!("{} field names but {} values", names.len(), values.len()),
            });
        }
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => {
                    let k = names.iter().position(|n| n.as_ref() == f).ok_or_else(|| {
                        TokenizeError::MissingField {
                            field: f.clone(),
                            available: names
                                .iter()
                                .map(|n| n.as_ref())
                                .collect::<Vec<_>>()
                                .join(", "),
                        }
                    })?;
                    out.push_str(values[k].as_ref());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_repeats_and_errors() {
        let t = PromptTemplate::parse("{{x}} {a}/{b}/{a}").unwrap();
        assert_eq!(t.fields(), ["a", "b"]);
        assert_eq!(t.literals(), ["{x} ", "/", "/"]);
        assert_eq!(t.fill(&["b", "a"], &["2", "1"]).unwrap(), "{x} 1/2/1");
        assert_eq!(
            PromptTemplate::parse("plain")
                .unwrap()
                .fill::<&str, &str>(&[], &[])
                .unwrap(),
            "plain"
        );
        for bad in ["{a", "a}", "{}", "{a b}", "x {"] {
            assert!(
                matches!(
                    PromptTemplate::parse(bad),
                    Err(TokenizeError::Template { .. })
                ),
                "{bad}"
            );
        }
        let e = t.fill(&["a"], &["1"]).unwrap_err();
        assert_eq!(
            e,
            TokenizeError::MissingField {
                field: "b".into(),
                available: "a".into()
            }
        );
        assert!(t.fill(&["a", "b"], &["1"]).is_err());
    }
}
