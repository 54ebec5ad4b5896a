//! The prompt table of the conditional tests: two conditions, "lo" and "hi", prompted by
//! "Generate a {level} sample:" through a word tokenizer.

use calmflow_tokenize::{PromptTemplate, PromptTokenizer, WordTokenizer};
use calmflow_train::ConditionTable;

/// The table (condition 0 = "lo", 1 = "hi") and its tokenizer.
pub fn level_table() -> (ConditionTable, PromptTokenizer) {
    let template = PromptTemplate::parse("Generate a {level} sample:").unwrap();
    let labels = [vec!["lo".to_string()], vec!["hi".to_string()]];
    let texts: Vec<String> = labels
        .iter()
        .map(|l| template.fill(&["level"], l).unwrap())
        .collect();
    let tokenizer = PromptTokenizer::Word(WordTokenizer::from_texts(&texts));
    let prompts = texts.iter().map(|t| tokenizer.encode(t).unwrap()).collect();
    let table = ConditionTable::new(
        vec!["level".into()],
        labels.to_vec(),
        prompts,
        tokenizer.pad_id(),
    )
    .unwrap();
    (table, tokenizer)
}
