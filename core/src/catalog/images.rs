//! Checks that every local image of a catalog exists and decodes.

use rayon::prelude::*;

use super::{BadRowPolicy, Catalog, Result, RowError, RowProblem};

/// Counts of an image check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImageCheck {
    pub checked: usize,
    pub missing: usize,
    pub corrupt: usize,
    /// URLs, which are not fetched.
    pub remote: usize,
}

/// Decodes every local image of every item in parallel; items with a missing
/// or corrupt image are bad rows under `policy`. `progress` is called once per
/// item checked.
pub fn verify(catalog: &mut Catalog, policy: BadRowPolicy, progress: impl Fn() + Sync) -> Result<ImageCheck> {
    let problems: Vec<(usize, Vec<RowProblem>, usize)> = catalog
        .items
        .par_iter()
        .enumerate()
        .map(|(index, item)| {
            let mut problems = Vec::new();
            let mut remote = 0;
            for image in &item.images {
                let Some(path) = catalog.image_path(image) else {
                    remote += 1;
                    continue;
                };
                match std::fs::read(&path) {
                    Err(_) => problems.push(RowProblem::MissingImage { path: path.display().to_string() }),
                    Ok(bytes) => {
                        if let Err(e) = image::load_from_memory(&bytes) {
                            problems.push(RowProblem::CorruptImage { path: path.display().to_string(), reason: e.to_string() });
                        }
                    }
                }
            }
            progress();
            (index, problems, remote)
        })
        .collect();
    let mut check = ImageCheck { checked: catalog.items.len(), ..Default::default() };
    let mut bad = Vec::new();
    for (index, item_problems, remote) in problems {
        check.remote += remote;
        let item = &catalog.items[index];
        for problem in item_problems {
            match problem {
                RowProblem::MissingImage { .. } => check.missing += 1,
                _ => check.corrupt += 1,
            }
            bad.push((item.id.clone(), RowError { loc: item.source.clone(), problem }));
        }
    }
    catalog.reject(bad, policy)?;
    Ok(check)
}
