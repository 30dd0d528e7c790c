//! The canonical catalog schema shared by every importer and every later stage.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::SourceLoc;

/// One product (article) of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Unique id of this article.
    pub id: String,
    /// Same garment in another colour or print share a `group_id`.
    pub group_id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    #[serde(default)]
    pub subcategory: String,
    /// Structured fields, e.g. `colour`, `print`, `department`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Image paths (relative to the catalog folder, or absolute) or URLs.
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the item was read from; not part of the file format.
    #[serde(skip)]
    pub source: SourceLoc,
}

impl Item {
    /// The text used for image-text tasks: `title + ". " + description`.
    pub fn text(&self) -> String {
        match (self.title.trim(), self.description.trim()) {
            (t, "") => t.to_string(),
            ("", d) => d.to_string(),
            (t, d) => format!("{t}. {d}"),
        }
    }

    /// The text used to train image-text tasks: [`Item::text`] with the
    /// structured colour, print and type near the front (so that truncation
    /// keeps them), in one of several phrasings picked by the id. Catalog
    /// text rarely names the colour; captions teach the colour words from the
    /// photo. Never the indexed or evaluated text, which stays [`Item::text`].
    pub fn caption(&self) -> String {
        let colour = self.attribute(attr::COLOUR).map(str::to_lowercase);
        let print = self.attribute(attr::PRINT).map(str::to_lowercase).filter(|p| p != "solid");
        if colour.is_none() && print.is_none() {
            return self.text();
        }
        let colour = colour.unwrap_or_default();
        let print = print.map(|p| format!(", {p}")).unwrap_or_default();
        let product_type = self.subcategory.to_lowercase();
        let title = self.title.trim();
        let lead = match crate::hash::fnv1a64(self.id.as_bytes()) % 3 {
            0 => format!("{title}. {colour} {product_type}{print}"),
            1 => format!("{colour} {title}{print}"),
            _ => format!("{title} in {colour}{print}"),
        };
        let lead = lead.split_whitespace().collect::<Vec<_>>().join(" ");
        match self.description.trim() {
            "" => lead,
            d => format!("{lead}. {d}"),
        }
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// Attribute keys with a fixed meaning across importers.
pub mod attr {
    /// Colour name, e.g. "dark blue".
    pub const COLOUR: &str = "colour";
    /// Print or graphical appearance, e.g. "stripe", "solid".
    pub const PRINT: &str = "print";
}

/// A set of articles bought or worn together (an outfit signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basket {
    pub id: String,
    pub items: Vec<String>,
    /// Where the basket was read from; not part of the file format.
    #[serde(skip)]
    pub source: SourceLoc,
}

/// The fixed dataset split an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_carry_colour_and_print_and_fall_back_to_the_text() {
        let mut item = Item {
            id: "0706016001".into(),
            group_id: "0706016".into(),
            title: "Jade HW Skinny Denim TRS".into(),
            description: "High-waisted jeans in washed superstretch denim.".into(),
            category: "Garment Lower body".into(),
            subcategory: "Trousers".into(),
            attributes: [(attr::COLOUR.to_string(), "Dark Blue".to_string()), (attr::PRINT.to_string(), "Denim".to_string())].into(),
            images: Vec::new(),
            price: None,
            url: None,
            source: SourceLoc::default(),
        };
        let caption = item.caption();
        assert!(caption.contains("dark blue") && caption.contains(", denim"), "{caption}");
        assert!(caption.ends_with(". High-waisted jeans in washed superstretch denim."), "{caption}");
        // Several phrasings across items.
        let phrasings: std::collections::BTreeSet<String> = (0..30)
            .map(|i| {
                item.id = format!("item{i}");
                item.caption().split("dark blue").next().unwrap_or("").len().to_string()
            })
            .collect();
        assert!(phrasings.len() >= 2, "{phrasings:?}");
        item.attributes.clear();
        assert_eq!(item.caption(), item.text());
    }
}
