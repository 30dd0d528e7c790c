//! The datasets of the pretext and downstream tasks, derived from a catalog and
//! its split (DESIGN.md §2–3, and the fixed definitions in the H&M data README):
//!
//! - [`image_text_pairs`]: image vs `title. description` (ITC, ITM, MLM, XMR).
//! - [`Labels`]: category / subcategory labels (CR / SCR); the label set is the
//!   train split's, and val/test items with a label unseen in train are reported.
//! - [`tgir_triplets`]: ordered (reference, target) pairs of one `group_id` that
//!   differ in colour or print, with a generated modification text (TGIR); in
//!   a catalog without such groups, pairs of one subcategory that differ in one
//!   attribute.
//! - [`outfit_questions`]: one basket item hidden, the rest plus the hidden
//!   item's category as the query (OCIR).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::catalog::{attr, strict_failure, BadRowPolicy, Catalog, CatalogError, Item, RowError, RowProblem, Split};
use crate::hash::Fnv1a;

/// One image-text pair: an item's image and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTextPair {
    pub item: usize,
    pub image: String,
    pub text: String,
}

/// Pairs of every image of every item of `split` with the item's text.
pub fn image_text_pairs(catalog: &Catalog, split: Split) -> Vec<ImageTextPair> {
    catalog
        .items_in(split)
        .flat_map(|(index, item)| {
            let text = item.text();
            item.images.iter().map(move |image| ImageTextPair { item: index, image: image.clone(), text: text.clone() })
        })
        .collect()
}

/// Category and subcategory labels for recognition (CR / SCR).
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// Label names, sorted; a label's index is its class id.
    pub categories: Vec<String>,
    pub subcategories: Vec<String>,
    /// (item index, class id) per split; items with an unseen label are left out
    /// of that task and listed in `unseen`.
    pub category: BTreeMap<Split, Vec<(usize, usize)>>,
    pub subcategory: BTreeMap<Split, Vec<(usize, usize)>>,
    /// Val/test items whose label never occurs in the train split.
    pub unseen: Vec<RowError>,
}

/// One recognition task: the train split's label names (sorted), the
/// (item, class) pairs per split, and the val/test items whose label train lacks.
type LabelTask = (Vec<String>, BTreeMap<Split, Vec<(usize, usize)>>, Vec<RowError>);

fn label_task(catalog: &Catalog, name: &str, field: fn(&Item) -> &str) -> LabelTask {
    let names: Vec<String> = catalog
        .items_in(Split::Train)
        .map(|(_, it)| field(it))
        .filter(|v| !v.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_string)
        .collect();
    let class: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut per_split: BTreeMap<Split, Vec<(usize, usize)>> = BTreeMap::new();
    let mut unseen = Vec::new();
    for (index, item) in catalog.items.iter().enumerate() {
        let Some(split) = catalog.split_of(&item.id) else { continue };
        match class.get(field(item)) {
            Some(&label) => per_split.entry(split).or_default().push((index, label)),
            None => unseen.push(RowError {
                loc: item.source.clone(),
                problem: RowProblem::UnknownCategory { field: name.into(), value: field(item).to_string(), split: split.to_string() },
            }),
        }
    }
    (names, per_split, unseen)
}

impl Labels {
    /// Builds the label sets from the train split. Under the strict policy an
    /// unseen val/test label is an error naming the item's file and line; under
    /// skip the item is left out of that task and reported in `unseen`.
    pub fn from_catalog(catalog: &Catalog, policy: BadRowPolicy) -> Result<Labels, CatalogError> {
        let (categories, category, mut unseen) = label_task(catalog, "category", |it| &it.category);
        let (subcategories, subcategory, unseen_sub) = label_task(catalog, "subcategory", |it| &it.subcategory);
        unseen.extend(unseen_sub);
        if policy == BadRowPolicy::Strict && !unseen.is_empty() {
            return Err(strict_failure(unseen));
        }
        Ok(Labels { categories, subcategories, category, subcategory, unseen })
    }
}

/// A text-guided retrieval example: the reference item, the wanted target item
/// and the text that describes the change.
#[derive(Debug, Clone, PartialEq)]
pub struct TgirTriplet {
    pub reference: usize,
    pub target: usize,
    pub modification: String,
    pub split: Split,
}

/// Targets drawn for each reference when the triplets come from attribute
/// differences: a subcategory has many items one attribute away from each
/// other, and all of its pairs would outnumber the catalog many times over.
pub const ATTRIBUTE_TARGETS_PER_REFERENCE: usize = 3;

/// The TGIR triplets of a catalog: from its colour or print variants (items
/// sharing a `group_id`) when it has any, else from attribute differences
/// (see [`attribute_triplets`]).
pub fn tgir_triplets(catalog: &Catalog) -> Vec<TgirTriplet> {
    if has_variant_groups(catalog) {
        group_triplets(catalog)
    } else {
        attribute_triplets(catalog)
    }
}

/// Whether two items of the catalog share a `group_id`.
pub fn has_variant_groups(catalog: &Catalog) -> bool {
    let mut seen = BTreeSet::new();
    catalog.items.iter().any(|item| !seen.insert(item.group_id.as_str()))
}

/// Items of each split grouped by `key`, in catalog order within a group.
fn members_by<'a, K: Ord>(catalog: &'a Catalog, key: impl Fn(&'a Item) -> K) -> BTreeMap<(K, Split), Vec<usize>> {
    let mut groups: BTreeMap<(K, Split), Vec<usize>> = BTreeMap::new();
    for (index, item) in catalog.items.iter().enumerate() {
        if let Some(split) = catalog.split_of(&item.id) {
            groups.entry((key(item), split)).or_default().push(index);
        }
    }
    groups
}

/// Ordered pairs of different items of one `group_id` and one split whose
/// colour or print differ, each with a modification text generated from the
/// attribute difference (the phrasing varies deterministically per pair).
fn group_triplets(catalog: &Catalog) -> Vec<TgirTriplet> {
    let mut triplets = Vec::new();
    for ((_, split), members) in members_by(catalog, |item| item.group_id.as_str()) {
        for &reference in &members {
            for &target in &members {
                if reference == target {
                    continue;
                }
                let (r, t) = (&catalog.items[reference], &catalog.items[target]);
                if let Some(modification) = modification_text(r, t) {
                    triplets.push(TgirTriplet { reference, target, modification, split });
                }
            }
        }
    }
    triplets
}

/// For a catalog without variant groups: pairs of items of one subcategory
/// (the category where it has none) and one split that differ in exactly one
/// attribute, colour, print or any other the catalog maps, with the
/// modification text made from that difference. Each reference keeps
/// [`ATTRIBUTE_TARGETS_PER_REFERENCE`] of its targets, drawn by a hash of the
/// pair so that the choice is stable from run to run.
pub fn attribute_triplets(catalog: &Catalog) -> Vec<TgirTriplet> {
    let mut triplets = Vec::new();
    for ((_, split), members) in members_by(catalog, |item| (item.category.as_str(), kind_of(item))) {
        for &reference in &members {
            let r = &catalog.items[reference];
            // Texts only for the targets kept: a subcategory has many candidates.
            let mut targets: Vec<(usize, usize, &str)> = members
                .iter()
                .filter(|&&target| target != reference)
                .filter_map(|&target| {
                    let t = &catalog.items[target];
                    single_differing_attribute(r, t).map(|key| (phrasing_seed(&t.id, &r.id), target, key))
                })
                .collect();
            targets.sort_unstable();
            triplets.extend(targets.into_iter().take(ATTRIBUTE_TARGETS_PER_REFERENCE).filter_map(|(_, target, key)| {
                let modification = attribute_change_text(r, &catalog.items[target], key)?;
                Some(TgirTriplet { reference, target, modification, split })
            }));
        }
    }
    triplets
}

/// An item's subcategory, or its category where it has none.
fn kind_of(item: &Item) -> &str {
    if item.subcategory.is_empty() {
        &item.category
    } else {
        &item.subcategory
    }
}

/// The one attribute in which two items differ, both having it, or `None`.
fn single_differing_attribute<'a>(reference: &'a Item, target: &'a Item) -> Option<&'a str> {
    let differs = |key: &str| reference.attribute(key) != target.attribute(key);
    let only_in_target = target.attributes.keys().filter(|key| !reference.attributes.contains_key(*key));
    let mut differing = reference.attributes.keys().chain(only_in_target).map(String::as_str).filter(|&key| differs(key));
    match (differing.next(), differing.next()) {
        (Some(key), None) if reference.attribute(key).is_some() && target.attribute(key).is_some() => Some(key),
        _ => None,
    }
}

/// The modification text of a change of attribute `key` from `reference` to `target`.
fn attribute_change_text(reference: &Item, target: &Item, key: &str) -> Option<String> {
    if key == attr::COLOUR || key == attr::PRINT {
        return modification_text(reference, target);
    }
    let (from, to) = (reference.attribute(key)?.trim().to_lowercase(), target.attribute(key)?.trim().to_lowercase());
    let options = [format!("the {to} one"), format!("{to} instead of {from}"), format!("same but {to}")];
    Some(options[phrasing_seed(&reference.id, &target.id) % options.len()].clone())
}

/// Describes how `target` differs from `reference` in colour and print, or
/// `None` when neither differs.
pub fn modification_text(reference: &Item, target: &Item) -> Option<String> {
    let colour = |it: &Item| it.attribute(attr::COLOUR).map(colour_phrase);
    let print = |it: &Item| it.attribute(attr::PRINT).map(print_adjective);
    let (rc, tc) = (colour(reference), colour(target));
    let (rp, tp) = (print(reference), print(target));
    let colour_change = (reference.attribute(attr::COLOUR) != target.attribute(attr::COLOUR)).then_some(());
    let print_change = (reference.attribute(attr::PRINT) != target.attribute(attr::PRINT)).then_some(());
    let variant = phrasing_seed(&reference.id, &target.id);
    let text = match (colour_change.and(tc), print_change.and(tp)) {
        (Some(tc), None) => {
            let rc = rc.unwrap_or_else(|| "the current colour".into());
            let options = [
                format!("in {tc} instead of {rc}"),
                format!("the {tc} one"),
                format!("same but {tc}"),
                format!("change the colour to {tc}"),
                format!("{tc} rather than {rc}"),
            ];
            options[variant % options.len()].clone()
        }
        (None, Some(tp)) => {
            let rp = rp.unwrap_or_else(|| "plain".into());
            let options = [format!("the {tp} version"), format!("{tp} instead of {rp}"), format!("make it {tp}"), format!("same but {tp}")];
            options[variant % options.len()].clone()
        }
        (Some(tc), Some(tp)) => {
            let options = [format!("the {tp} {tc} version"), format!("{tc} and {tp} instead"), format!("make it {tp} and {tc}")];
            options[variant % options.len()].clone()
        }
        (None, None) => return None,
    };
    Some(text)
}

/// A stable per-pair number used to pick a phrasing (FNV-1a over both ids).
fn phrasing_seed(a: &str, b: &str) -> usize {
    Fnv1a::default().write(a.as_bytes()).write(&[0]).write(b.as_bytes()).finish() as usize
}

/// "Dark Blue" → "dark blue"; "Other Pink" → "pink".
fn colour_phrase(colour: &str) -> String {
    let lower = colour.trim().to_lowercase();
    lower.strip_prefix("other ").map(str::to_string).unwrap_or(lower)
}

/// Print or appearance names as the adjective a shopper would type.
fn print_adjective(print: &str) -> String {
    let lower = print.trim().to_lowercase();
    let adjective = match lower.as_str() {
        "solid" => "plain",
        "stripe" => "striped",
        "check" => "checked",
        "dot" => "dotted",
        "all over pattern" => "patterned",
        "placement print" | "front print" => "printed",
        "embroidery" => "embroidered",
        "glittering/metallic" => "metallic",
        "lace" => "lacy",
        "sequin" => "sequined",
        "other pattern" | "other structure" => "textured",
        _ => return lower,
    };
    adjective.to_string()
}

/// An outfit question: the items of a basket but one, and the category of the
/// hidden one, which is the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutfitQuestion {
    pub basket: usize,
    pub context: Vec<usize>,
    pub answer: usize,
    pub category: String,
    pub split: Split,
}

/// One question per (basket, hidden item). The question belongs to the hidden
/// item's split; context items may come from any split (they are inputs, never
/// answers), so training never hides a val/test item.
pub fn outfit_questions(catalog: &Catalog) -> Vec<OutfitQuestion> {
    let mut questions = Vec::new();
    for (basket_index, basket) in catalog.baskets.iter().enumerate() {
        let members: Vec<usize> = basket.items.iter().filter_map(|id| catalog.index_of(id)).collect::<BTreeSet<_>>().into_iter().collect();
        for &answer in &members {
            let hidden = &catalog.items[answer];
            let Some(split) = catalog.split_of(&hidden.id) else { continue };
            let context = members.iter().copied().filter(|&m| m != answer).collect::<Vec<_>>();
            if context.is_empty() {
                continue;
            }
            questions.push(OutfitQuestion { basket: basket_index, context, answer, category: hidden.category.clone(), split });
        }
    }
    questions
}

/// The candidates of an outfit question: the items of its category in its split.
pub fn outfit_candidates(catalog: &Catalog, category: &str, split: Split) -> Vec<usize> {
    catalog.items_in(split).filter(|(_, it)| it.category == category).map(|(i, _)| i).collect()
}
