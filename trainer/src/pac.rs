//! Pseudo-attributes for the PAC pretext task, mined from the catalog.
//!
//! The paper's attribute extractor is not public; this is the rule vitrine uses:
//!
//! 1. Structured fields: every `colour` and `print` value of a train item is an
//!    attribute (`colour=dark blue`, `print=stripe`).
//! 2. Content words: lower-cased alphabetic words of `title + description`,
//!    at least 3 letters, not a stop word, that occur in at least `min_df` train
//!    items and in at most `max_df_fraction` of them (too common words describe
//!    nothing); the `max_words` most frequent are kept.
//! 3. Phrases: adjacent pairs of such content words, kept under the same bounds
//!    (`max_phrases` most frequent), e.g. `ankle boots`, `long sleeves`.
//!
//! An item's attributes are the vocabulary entries its fields and text contain;
//! its PAC target spreads 1/|attributes| over them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vitrine_core::catalog::{attr, Item};

/// Bounds of the mining rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacRule {
    pub min_df: usize,
    pub max_df_fraction: f64,
    pub max_words: usize,
    pub max_phrases: usize,
}

impl Default for PacRule {
    fn default() -> Self {
        PacRule { min_df: 10, max_df_fraction: 0.2, max_words: 400, max_phrases: 200 }
    }
}

/// The mined attribute vocabulary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PacVocabulary {
    /// Attribute names; an attribute's index is its class id.
    pub attributes: Vec<String>,
}

const STOP_WORDS: &[&str] = &[
    "and", "the", "with", "for", "from", "that", "this", "are", "has", "have", "its", "into", "made", "one", "two", "which", "also", "can",
    "but", "not", "all", "each", "other", "more", "than", "your", "you", "our", "any", "some", "such", "very", "just", "over", "under",
    "while", "when", "where", "there", "their", "them", "they", "been", "was", "were", "will", "would", "should", "could", "may", "use",
    "size", "sizes", "part", "parts", "incl", "approx", "cm", "per", "cent", "wash", "washable", "contains",
];

/// Lower-cased content words of a text, in order.
pub fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

fn structured(item: &Item) -> impl Iterator<Item = String> + '_ {
    [attr::COLOUR, attr::PRINT].into_iter().filter_map(move |key| Some(format!("{key}={}", item.attribute(key)?.to_lowercase())))
}

fn phrases(words: &[String]) -> impl Iterator<Item = String> + '_ {
    words.windows(2).map(|w| format!("{} {}", w[0], w[1]))
}

impl PacVocabulary {
    /// Mines the vocabulary from the (train) items under `rule`.
    pub fn mine<'a>(items: impl IntoIterator<Item = &'a Item>, rule: &PacRule) -> PacVocabulary {
        let mut fields = BTreeSet::new();
        let mut word_df: HashMap<String, usize> = HashMap::new();
        let mut phrase_df: HashMap<String, usize> = HashMap::new();
        let mut documents = 0usize;
        for item in items {
            documents += 1;
            fields.extend(structured(item));
            let words = content_words(&item.text());
            for word in words.iter().cloned().collect::<BTreeSet<_>>() {
                *word_df.entry(word).or_default() += 1;
            }
            for phrase in phrases(&words).collect::<BTreeSet<_>>() {
                *phrase_df.entry(phrase).or_default() += 1;
            }
        }
        let max_df = (rule.max_df_fraction * documents as f64).floor() as usize;
        let top = |df: HashMap<String, usize>, keep: usize| {
            let mut kept: Vec<(String, usize)> = df.into_iter().filter(|(_, n)| *n >= rule.min_df && *n <= max_df).collect();
            // Most frequent first; ties by name so the vocabulary is deterministic.
            kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            kept.into_iter().take(keep).map(|(w, _)| w)
        };
        let mut attributes: Vec<String> = fields.into_iter().collect();
        attributes.extend(top(word_df, rule.max_words));
        attributes.extend(top(phrase_df, rule.max_phrases));
        PacVocabulary { attributes }
    }

    pub fn len(&self) -> usize {
        self.attributes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// Class ids of the attributes `item` has, sorted.
    pub fn attributes_of(&self, item: &Item) -> Vec<usize> {
        let index: HashMap<&str, usize> = self.attributes.iter().enumerate().map(|(i, a)| (a.as_str(), i)).collect();
        let words = content_words(&item.text());
        let found: BTreeSet<usize> = structured(item)
            .chain(words.iter().cloned())
            .chain(phrases(&words))
            .filter_map(|candidate| index.get(candidate.as_str()).copied())
            .collect();
        found.into_iter().collect()
    }

    /// The soft PAC target of `item`: 1/|attributes| on each of its attributes.
    pub fn soft_target(&self, item: &Item) -> BTreeMap<usize, f32> {
        let ids = self.attributes_of(item);
        let weight = 1.0 / ids.len().max(1) as f32;
        ids.into_iter().map(|id| (id, weight)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, title: &str, description: &str, colour: &str) -> Item {
        Item {
            id: id.into(),
            group_id: id.into(),
            title: title.into(),
            description: description.into(),
            category: "Shoes".into(),
            subcategory: String::new(),
            attributes: [(attr::COLOUR.to_string(), colour.to_string())].into(),
            images: vec![],
            price: None,
            url: None,
            source: Default::default(),
        }
    }

    #[test]
    fn mines_fields_words_and_phrases_within_bounds() {
        let mut items = Vec::new();
        for i in 0..10 {
            items.push(item(&format!("b{i}"), "Ankle boots", "Leather ankle boots with a block heel.", "Black"));
            items.push(item(&format!("s{i}"), "Sneakers", "Canvas sneakers with laces.", "White"));
            items.push(item(&format!("t{i}"), "Shirt", "Cotton shirt with a collar.", "Blue"));
            items.push(item(&format!("d{i}"), "Dress", "Long dress in viscose.", "Red"));
            items.push(item(&format!("c{i}"), "Coat", "Wool coat with pockets.", "Grey"));
        }
        items.push(item("rare", "Unique sandals", "Cork sandals.", "Black"));
        let rule = PacRule { min_df: 5, max_df_fraction: 0.3, max_words: 100, max_phrases: 100 };
        let vocab = PacVocabulary::mine(&items, &rule);
        for expected in ["colour=black", "colour=white", "ankle", "boots", "leather", "ankle boots", "block heel"] {
            assert!(vocab.attributes.contains(&expected.to_string()), "{expected} in {:?}", vocab.attributes);
        }
        // Below min_df (1 item) and stop words are left out.
        for absent in ["cork", "sandals", "with"] {
            assert!(!vocab.attributes.contains(&absent.to_string()), "{absent}");
        }
        let target = vocab.soft_target(&items[0]);
        let names: Vec<&str> = target.keys().map(|&i| vocab.attributes[i].as_str()).collect();
        assert!(names.contains(&"ankle boots") && names.contains(&"colour=black"));
        let total: f32 = target.values().sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(target.values().all(|&w| (w - 1.0 / target.len() as f32).abs() < 1e-7));
    }

    #[test]
    fn too_common_words_are_not_attributes() {
        let fabric = ["linen", "wool"];
        let items: Vec<Item> =
            (0..20).map(|i| item(&i.to_string(), "Cotton top", &format!("Lined with {}", fabric[i % 2]), "Black")).collect();
        let rule = PacRule { min_df: 2, max_df_fraction: 0.6, max_words: 10, max_phrases: 10 };
        let vocab = PacVocabulary::mine(&items, &rule);
        assert!(!vocab.attributes.contains(&"cotton".to_string()), "in every item: {:?}", vocab.attributes);
        assert!(vocab.attributes.contains(&"linen".to_string()) && vocab.attributes.contains(&"wool".to_string()));
    }
}
