//! A smaller WordPiece vocabulary for the browser's text encoder.
//!
//! MiniLM's word embedding table (30,522 tokens × 384) is half of its weights,
//! and a fashion catalog uses a small part of it. The pruned vocabulary keeps:
//! the special tokens; the single characters (and their `##` forms) of Latin
//! script, punctuation and currency signs, so that any such word still
//! tokenises (into smaller pieces when its own piece is gone); the first
//! `common` whole wordpieces in id order (BERT's vocabularies list them roughly
//! by frequency: "the", "of", "and", …); and every token the catalog's own
//! texts use. Kept tokens keep their relative order and get ids `0..n`.
//!
//! The tokenizer file is rewritten through `serde_json::Value`: the model's
//! vocabulary, the added tokens, and the ids that the post-processor and the
//! padding settings name. Anything else in it is left as it is.

use std::collections::BTreeSet;

use serde_json::Value;

/// Errors of reading or rewriting a `tokenizer.json`.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("tokenizer.json: {0}")]
    Format(String),
    #[error("tokenizer.json: token id {0} is not in the vocabulary")]
    UnknownId(u32),
}

/// The pruned tokenizer and, for each new id, the teacher's id of that token.
pub struct PrunedVocabulary {
    pub tokenizer_json: Vec<u8>,
    pub teacher_ids: Vec<u32>,
}

/// The character `token` (with or without a `##` prefix) stands for, if it is one.
fn single_character(token: &str) -> Option<char> {
    let mut chars = token.strip_prefix("##").unwrap_or(token).chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// Whether `token` is one character a shopper's Latin-script text may hold.
fn is_kept_character(token: &str) -> bool {
    // Basic Latin to Latin Extended-B; general punctuation and currency signs.
    single_character(token).map(u32::from).is_some_and(|code| code < 0x250 || (0x2000..0x20d0).contains(&code))
}

/// `[unused12]`-style placeholders some BERT vocabularies reserve.
fn is_placeholder(token: &str) -> bool {
    token.starts_with("[unused") && token.ends_with(']')
}

fn format_err(what: &str) -> VocabError {
    VocabError::Format(format!("{what} is missing or not of the expected type (a WordPiece tokenizer is expected)"))
}

/// Prunes `tokenizer_json` (a WordPiece `tokenizer.json`) to the tokens
/// described in the module documentation; `used` are the teacher ids the
/// catalog's texts tokenise to.
pub fn prune(tokenizer_json: &[u8], common: usize, used: &BTreeSet<u32>) -> Result<PrunedVocabulary, VocabError> {
    let mut json: Value = serde_json::from_slice(tokenizer_json).map_err(|e| VocabError::Format(e.to_string()))?;
    if json.pointer("/model/type").and_then(Value::as_str) != Some("WordPiece") {
        return Err(VocabError::Format("the model is not WordPiece; only BERT-style tokenizers can be pruned".into()));
    }
    let vocab = json.pointer("/model/vocab").and_then(Value::as_object).ok_or_else(|| format_err("model.vocab"))?;
    let mut by_id: Vec<(u32, String)> = vocab
        .iter()
        .map(|(token, id)| {
            let id = id.as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| format_err("a model.vocab id"))?;
            Ok((id, token.clone()))
        })
        .collect::<Result<_, VocabError>>()?;
    by_id.sort_unstable();

    let special: BTreeSet<u32> = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| format_err("added_tokens"))?
        .iter()
        .map(|t| t.get("id").and_then(Value::as_u64).and_then(|id| u32::try_from(id).ok()).ok_or_else(|| format_err("an added token's id")))
        .collect::<Result<_, _>>()?;
    let mut common_left = common;
    let mut keep = Vec::new();
    for (id, token) in &by_id {
        let wordpiece = !special.contains(id) && !is_placeholder(token) && single_character(token).is_none() && !token.starts_with("##");
        let frequent = wordpiece && common_left > 0;
        if frequent {
            common_left -= 1;
        }
        if special.contains(id) || is_kept_character(token) || frequent || used.contains(id) {
            keep.push((*id, token.clone()));
        }
    }
    let new_id = |old: u32| keep.binary_search_by_key(&old, |(id, _)| *id).map(|i| i as u64).map_err(|_| VocabError::UnknownId(old));

    let pruned: serde_json::Map<String, Value> = keep.iter().enumerate().map(|(i, (_, token))| (token.clone(), Value::from(i))).collect();
    json["model"]["vocab"] = Value::Object(pruned);
    for token in json["added_tokens"].as_array_mut().expect("checked above") {
        let old = token["id"].as_u64().expect("checked above") as u32;
        token["id"] = Value::from(new_id(old)?);
    }
    if let Some(specials) = json.pointer_mut("/post_processor/special_tokens").and_then(Value::as_object_mut) {
        for special in specials.values_mut() {
            let ids = special.get_mut("ids").and_then(Value::as_array_mut).ok_or_else(|| format_err("a post-processor token's ids"))?;
            for id in ids {
                let old = id.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| format_err("a post-processor token id"))?;
                *id = Value::from(new_id(old)?);
            }
        }
    }
    if let Some(pad_id) = json.pointer_mut("/padding/pad_id") {
        let old = pad_id.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| format_err("padding.pad_id"))?;
        *pad_id = Value::from(new_id(old)?);
    }
    let tokenizer_json = serde_json::to_vec(&json).expect("a JSON value serialises");
    Ok(PrunedVocabulary { tokenizer_json, teacher_ids: keep.into_iter().map(|(id, _)| id).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitrine_core::text::Tokenizer;

    /// A small BERT-style tokenizer: specials, placeholders, characters, words, suffixes.
    fn tokenizer_json() -> Vec<u8> {
        let tokens = [
            "[PAD]",
            "[unused0]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[MASK]",
            "a",
            "b",
            "d",
            "e",
            "l",
            "r",
            "s",
            "u",
            "y",
            "z",
            "ж",
            "the",
            "dress",
            "red",
            "blue",
            "zebra",
            "##s",
            "##a",
            "##b",
            "##e",
            "##d",
            "##l",
            "##r",
            "##u",
            "##y",
            "##ж",
            "##ress",
        ];
        let vocab: serde_json::Map<String, Value> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), Value::from(i))).collect();
        let special = |id: usize, content: &str| serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
        serde_json::to_vec(&serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
            "added_tokens": [special(0, "[PAD]"), special(2, "[UNK]"), special(3, "[CLS]"), special(4, "[SEP]"), special(5, "[MASK]")],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [3], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [4], "tokens": ["[SEP]"]}}},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab}
        }))
        .unwrap()
    }

    fn tokens(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
        tokenizer.encode(text).unwrap().ids
    }

    #[test]
    fn kept_tokens_keep_their_tokenisation_and_pruned_words_split_into_pieces() {
        let json = tokenizer_json();
        let teacher = Tokenizer::from_json_bytes(&json, "teacher", 32).unwrap();
        // The catalog says "red dresses"; one common wordpiece ("the") is kept by rank.
        let used: BTreeSet<u32> = tokens(&teacher, "red dresses").into_iter().collect();
        let pruned = prune(&json, 1, &used).unwrap();
        let student = Tokenizer::from_json_bytes(&pruned.tokenizer_json, "student", 32).unwrap();

        let kept: Vec<&str> = vec!["the", "red", "dress"];
        for word in &kept {
            assert!(student.token_to_id(word).is_some(), "{word} should be kept");
        }
        for word in ["blue", "zebra", "[unused0]", "ж", "##ж", "##ress"] {
            assert_eq!(student.token_to_id(word), None, "{word} should be pruned");
        }
        // Ids are dense and follow the teacher's order; the specials come through.
        assert_eq!(pruned.teacher_ids.len(), student.vocab_size());
        assert!(pruned.teacher_ids.windows(2).all(|w| w[0] < w[1]));
        for (new, &old) in pruned.teacher_ids.iter().enumerate() {
            assert!(old as usize >= new);
        }
        // A text of kept tokens tokenises to the same tokens, [CLS] and [SEP] included.
        let text = "The red dresses";
        let mapped: Vec<u32> = tokens(&student, text).iter().map(|&id| pruned.teacher_ids[id as usize]).collect();
        assert_eq!(mapped, tokens(&teacher, text));
        // A pruned word falls back to its characters; a non-Latin one to [UNK].
        let student_unk = student.token_to_id("[UNK]").unwrap();
        let blue = tokens(&student, "blue");
        assert_eq!(blue.len(), 2 + 4, "[CLS] b ##l ##u… expected characters, got {blue:?}");
        assert!(!blue.contains(&student_unk), "'blue' is spelled out with kept characters: {blue:?}");
        assert!(tokens(&student, "ж").contains(&student_unk));
        // Padding names the new [PAD] id.
        let value: Value = serde_json::from_slice(&pruned.tokenizer_json).unwrap();
        assert_eq!(value["padding"]["pad_id"].as_u64(), Some(u64::from(student.token_to_id("[PAD]").unwrap())));
    }

    #[test]
    fn other_tokenizers_are_refused_with_the_reason() {
        let mut json: Value = serde_json::from_slice(&tokenizer_json()).unwrap();
        json["model"]["type"] = Value::from("BPE");
        let err = prune(&serde_json::to_vec(&json).unwrap(), 10, &BTreeSet::new()).err().unwrap();
        assert!(err.to_string().contains("not WordPiece"), "{err}");
        let err = prune(b"{", 10, &BTreeSet::new()).err().unwrap();
        assert!(err.to_string().starts_with("tokenizer.json"), "{err}");
    }
}
