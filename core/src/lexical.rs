//! Okapi BM25 keyword scoring over short product texts: the keyword search a
//! shop's storefront starts from, and the baseline the shopper queries
//! compare the model with.
//!
//! Words are runs of letters and digits, lowercased (Unicode-aware), so that
//! "T-shirt" is the words "t" and "shirt" in the documents and in the query alike.

use std::collections::HashMap;

/// BM25's term-frequency saturation and length normalisation (the usual values).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// The words of `text`, lowercased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// An inverted index of documents' words with their BM25 statistics.
pub struct Bm25Index {
    /// word -> (document, occurrences in it)
    postings: HashMap<String, Vec<(u32, u32)>>,
    document_words: Vec<u32>,
    mean_document_words: f32,
}

impl Bm25Index {
    pub fn new<S: AsRef<str>>(documents: &[S]) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut document_words = Vec::with_capacity(documents.len());
        for (d, document) in documents.iter().enumerate() {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let mut total = 0u32;
            for word in words(document.as_ref()) {
                *counts.entry(word).or_default() += 1;
                total += 1;
            }
            for (word, count) in counts {
                postings.entry(word).or_default().push((d as u32, count));
            }
            document_words.push(total);
        }
        let mean_document_words = document_words.iter().map(|&n| n as f32).sum::<f32>() / documents.len().max(1) as f32;
        Bm25Index { postings, document_words, mean_document_words: mean_document_words.max(1.0) }
    }

    pub fn len(&self) -> usize {
        self.document_words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.document_words.is_empty()
    }

    /// Every document's score for `query` (0 where no query word occurs); a
    /// word repeated in the query counts once.
    pub fn scores(&self, query: &str) -> Vec<f32> {
        let mut scores = vec![0f32; self.len()];
        let mut seen = std::collections::HashSet::new();
        let n = self.len() as f32;
        for word in words(query) {
            if !seen.insert(word.clone()) {
                continue;
            }
            let Some(postings) = self.postings.get(&word) else { continue };
            let df = postings.len() as f32;
            // The "plus one" form keeps the weight positive for very common words.
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(d, tf) in postings {
                let tf = tf as f32;
                let length = self.document_words[d as usize] as f32 / self.mean_document_words;
                scores[d as usize] += idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length));
            }
        }
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_words_and_short_documents_score_higher() {
        let docs = ["black jersey dress", "black trousers in black denim with pockets and a zip", "white dress", "black sweater"];
        let index = Bm25Index::new(&docs);
        let scores = index.scores("black dress");
        // Both words beat one word; of the one-word matches, "dress" (2 documents) outweighs "black" (3).
        assert!(scores[0] > scores[2] && scores[0] > scores[3], "{scores:?}");
        assert!(scores[2] > scores[3], "{scores:?}");
        // Of two documents with the word once, the shorter scores higher.
        let black = index.scores("black");
        assert!(black[3] > black[0], "{black:?}");
        assert_eq!(index.scores("red")[0], 0.0);
        assert_eq!(words("T-Shirt, 2-pack").collect::<Vec<_>>(), ["t", "shirt", "2", "pack"]);
    }

    #[test]
    fn a_repeated_query_word_counts_once() {
        let index = Bm25Index::new(&["red dress", "blue dress"]);
        assert_eq!(index.scores("red red"), index.scores("red"));
    }
}
