//! Splits for catalog items whose source names none (a shop's export never
//! does): each colour group is drawn to train, val or test by a seeded hash of
//! its group id, so colour variants never straddle splits, and an item keeps
//! its split from one nightly import to the next (the draw depends on nothing
//! but the group id and the seed; new items get theirs by the same rule).
//!
//! A split the source gives wins; an unsplit item of a group whose other
//! members the source split takes their split, keeping the group whole.

use std::collections::HashMap;
use std::str::FromStr;

use serde::Serialize;

use super::{Catalog, Split};
use crate::hash::Fnv1a;

/// Shares of train, val and test (they sum to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SplitRatios {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Default for SplitRatios {
    /// 80/10/10.
    fn default() -> Self {
        SplitRatios { train: 0.8, val: 0.1, test: 0.1 }
    }
}

impl FromStr for SplitRatios {
    type Err = String;

    /// Three non-negative numbers separated by `/` or `,`, scaled to sum to 1:
    /// `80/10/10` or `0.8,0.1,0.1`.
    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(['/', ',']).map(str::trim).collect();
        let shares: Vec<f64> = parts
            .iter()
            .map(|p| p.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0))
            .collect::<Option<_>>()
            .filter(|shares: &Vec<f64>| shares.len() == 3)
            .ok_or_else(|| format!("split ratios `{text}`: expected three non-negative numbers such as 80/10/10"))?;
        let total: f64 = shares.iter().sum();
        if shares[0] <= 0.0 || total <= 0.0 {
            return Err(format!("split ratios `{text}`: the train share must be positive"));
        }
        Ok(SplitRatios { train: shares[0] / total, val: shares[1] / total, test: shares[2] / total })
    }
}

/// What [`assign_missing`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SplitAssignment {
    /// Items whose split the source gave.
    pub from_source: usize,
    /// Unsplit items that took the split of their group's source-split members.
    pub from_group: usize,
    /// Items drawn by the group rule, per split (train, val, test).
    pub drawn: [usize; 3],
}

impl SplitAssignment {
    pub fn drawn_total(&self) -> usize {
        self.drawn.iter().sum()
    }
}

/// MurmurHash3's 64-bit finaliser: FNV-1a's high bits barely change between
/// ids that differ in their last characters (`g1`, `g2`, …); after it every
/// input bit moves every output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The split the rule draws for a group.
pub fn drawn_split(group_id: &str, ratios: SplitRatios, seed: u64) -> Split {
    let hash = mix(Fnv1a::default().write(&seed.to_le_bytes()).write(group_id.as_bytes()).finish());
    // The top 53 bits as a uniform number in [0, 1).
    let u = (hash >> 11) as f64 / (1u64 << 53) as f64;
    if u < ratios.train {
        Split::Train
    } else if u < ratios.train + ratios.val {
        Split::Val
    } else {
        Split::Test
    }
}

/// Gives every item without a split one (see the module documentation).
pub fn assign_missing(catalog: &mut Catalog, ratios: SplitRatios, seed: u64) -> SplitAssignment {
    let mut group_split: HashMap<&str, Split> = HashMap::new();
    for item in &catalog.items {
        if let Some(split) = catalog.splits.get(&item.id) {
            group_split.entry(item.group_id.as_str()).or_insert(*split);
        }
    }
    let mut assignment = SplitAssignment::default();
    let mut new_splits = Vec::new();
    for item in &catalog.items {
        if catalog.splits.contains_key(&item.id) {
            assignment.from_source += 1;
            continue;
        }
        let split = match group_split.get(item.group_id.as_str()) {
            Some(&split) => {
                assignment.from_group += 1;
                split
            }
            None => {
                let split = drawn_split(&item.group_id, ratios, seed);
                assignment.drawn[split as usize] += 1;
                split
            }
        };
        new_splits.push((item.id.clone(), split));
    }
    catalog.splits.extend(new_splits);
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Item;

    fn item(id: &str, group: &str) -> Item {
        Item {
            id: id.into(),
            group_id: group.into(),
            title: id.into(),
            description: String::new(),
            category: "c".into(),
            subcategory: String::new(),
            attributes: Default::default(),
            images: Vec::new(),
            price: None,
            url: None,
            source: Default::default(),
        }
    }

    fn catalog(items: Vec<Item>) -> Catalog {
        let mut catalog = Catalog::new("/");
        catalog.items = items;
        catalog
    }

    #[test]
    fn ratios_parse_in_either_form_and_bad_ones_say_why() {
        assert_eq!("80/10/10".parse::<SplitRatios>().unwrap(), SplitRatios::default());
        let r: SplitRatios = "0.6, 0.2, 0.2".parse().unwrap();
        assert!((r.train - 0.6).abs() < 1e-12 && (r.test - 0.2).abs() < 1e-12);
        for bad in ["80/20", "a/b/c", "0/50/50", "80/-10/30", "80/10/10/0"] {
            assert!(bad.parse::<SplitRatios>().unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn groups_stay_whole_the_shares_follow_the_ratios_and_the_draw_is_stable() {
        // 3,000 groups of two colour variants.
        let items: Vec<Item> =
            (0..3000).flat_map(|g| [item(&format!("{g}-a"), &format!("g{g}")), item(&format!("{g}-b"), &format!("g{g}"))]).collect();
        let mut whole = catalog(items.clone());
        let assignment = assign_missing(&mut whole, SplitRatios::default(), 7);
        assert_eq!(assignment.drawn_total(), 6000);
        for g in 0..3000 {
            assert_eq!(whole.split_of(&format!("{g}-a")), whole.split_of(&format!("{g}-b")), "group {g} straddles splits");
        }
        let [train, val, test] = assignment.drawn.map(|n| n as f64 / 6000.0);
        assert!((train - 0.8).abs() < 0.03 && (val - 0.1).abs() < 0.02 && (test - 0.1).abs() < 0.02, "{:?}", assignment.drawn);

        // Tomorrow's export: half the items gone, new groups added; nobody moves.
        let mut tomorrow =
            catalog(items.iter().step_by(2).cloned().chain((3000..3100).map(|g| item(&format!("{g}-a"), &format!("g{g}")))).collect());
        assign_missing(&mut tomorrow, SplitRatios::default(), 7);
        for it in &tomorrow.items {
            if let Some(before) = whole.split_of(&it.id) {
                assert_eq!(tomorrow.split_of(&it.id), Some(before), "{} moved", it.id);
            }
        }
        // Another seed draws another split.
        let mut reseeded = catalog(items);
        assign_missing(&mut reseeded, SplitRatios::default(), 8);
        assert!(whole.items.iter().any(|it| whole.split_of(&it.id) != reseeded.split_of(&it.id)));
    }

    #[test]
    fn the_source_split_wins_and_pulls_its_group_along() {
        let mut c = catalog(vec![item("a1", "a"), item("a2", "a"), item("b1", "b")]);
        c.splits.insert("a1".into(), Split::Test);
        let assignment = assign_missing(&mut c, SplitRatios::default(), 7);
        assert_eq!(c.split_of("a1"), Some(Split::Test));
        assert_eq!(c.split_of("a2"), Some(Split::Test));
        assert_eq!(c.split_of("b1"), Some(drawn_split("b", SplitRatios::default(), 7)));
        assert_eq!((assignment.from_source, assignment.from_group, assignment.drawn_total()), (1, 1, 1));
    }
}
