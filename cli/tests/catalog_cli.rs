//! The `vitrine catalog` commands, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

fn vitrine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitrine")).args(args).output().expect("vitrine runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_then_check_reports_every_count() {
    let dir = tempfile::tempdir().unwrap();
    let out = vitrine(&["catalog", "generate", "--out", path(dir.path()), "--groups", "20", "--baskets", "15"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = vitrine(&["catalog", "check", path(dir.path()), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = summary["items"].as_u64().unwrap();
    assert!(items >= 40, "20 groups of 2-4 variants: {items}");
    assert_eq!(summary["groups"], 20);
    assert_eq!(summary["baskets"], 15);
    assert_eq!(summary["images"]["checked"].as_u64(), Some(items));
    assert_eq!(summary["images"]["corrupt"], 0);
    assert!(summary["tgir_triplets"]["train"].as_u64().unwrap() > 0);
    assert!(summary["ocir_questions"]["train"].as_u64().unwrap() > 0);
}

#[test]
fn check_fails_strict_and_skips_on_request() {
    let dir = tempfile::tempdir().unwrap();
    assert!(vitrine(&["catalog", "generate", "--out", path(dir.path()), "--groups", "6", "--baskets", "3"]).status.success());
    let image = dir.path().join("images/g0002-01.jpg");
    std::fs::write(&image, b"not a jpeg").unwrap();
    let strict = vitrine(&["catalog", "check", path(dir.path())]);
    assert!(!strict.status.success());
    let message = text(&strict);
    assert!(message.contains("items.jsonl:") && message.contains("g0002-01.jpg") && message.contains("does not decode"), "{message}");
    let skip = vitrine(&["catalog", "check", path(dir.path()), "--skip-bad-rows"]);
    assert!(skip.status.success(), "{}", text(&skip));
    let report = text(&skip);
    assert!(report.contains("skipped") && report.contains("1 corrupt") && report.contains("corrupt_image 1"), "{report}");
}

#[test]
fn import_csv_with_a_mapping_writes_a_canonical_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("shop.csv");
    std::fs::write(
        &export,
        "sku,parent,name,desc,cat,color\nA1,A,Linen shirt,Light and airy.,Tops,White\nA2,A,Linen shirt,Light and airy.,Tops,Blue\nB1,B,Wool scarf,,Accessories,Grey\n",
    )
    .unwrap();
    let mapping = dir.path().join("mapping.json");
    std::fs::write(
        &mapping,
        r#"{"id":"sku","group_id":"parent","title":"name","description":"desc","category":"cat","attributes":{"colour":"color"}}"#,
    )
    .unwrap();
    let out_dir = dir.path().join("canonical");
    let out = vitrine(&["catalog", "import", path(&export), "--format", "csv", "--mapping", path(&mapping), "--out", path(&out_dir)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 3 items"), "{}", text(&out));
    let check = vitrine(&["catalog", "check", path(&out_dir), "--json"]);
    assert!(check.status.success(), "{}", text(&check));
    let summary: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!((summary["items"].as_u64(), summary["groups"].as_u64(), summary["categories"].as_u64()), (Some(3), Some(2), Some(2)));
}

#[test]
fn a_shop_export_without_paths_or_split_imports_with_templated_photos_and_a_stable_group_split() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("images")).unwrap();
    let mut csv = String::from("id,name,articleType,baseColour\n");
    for i in 0..60 {
        // Two colour variants per style, both named by the style number in their id.
        for (variant, colour) in [("r", "Red"), ("b", "Blue")] {
            let id = format!("{i}{variant}");
            image::RgbImage::from_pixel(8, 12, image::Rgb([i as u8 * 4, 90, 200]))
                .save(dir.path().join(format!("images/{id}.jpg")))
                .unwrap();
            csv.push_str(&format!("{id},Style {i} top,Tops,{colour}\n"));
        }
    }
    let export = dir.path().join("styles.csv");
    std::fs::write(&export, &csv).unwrap();
    let mapping = dir.path().join("mapping.json");
    std::fs::write(
        &mapping,
        r#"{"id":"id","title":"name","category":"articleType","attributes":{"colour":"baseColour"},"image_template":"images/{id}.jpg"}"#,
    )
    .unwrap();
    let import = |out: &Path, ratios: &str| {
        let args = [
            "catalog",
            "import",
            path(&export),
            "--format",
            "csv",
            "--mapping",
            path(&mapping),
            "--out",
            path(out),
            "--split-ratios",
            ratios,
        ];
        let out = vitrine(&args);
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let first = dir.path().join("first");
    let report = import(&first, "80/10/10");
    assert!(report.contains("120 drawn by colour group"), "{report}");
    let splits = std::fs::read_to_string(first.join("splits.csv")).unwrap();
    assert_eq!(splits.lines().filter(|l| l.ends_with(",train") || l.ends_with(",val") || l.ends_with(",test")).count(), 120, "{splits}");
    // Without group ids each item is its own group; the same export imported again splits the same way.
    let again = dir.path().join("again");
    import(&again, "80/10/10");
    assert_eq!(std::fs::read_to_string(again.join("splits.csv")).unwrap(), splits);
    let check = vitrine(&["catalog", "check", path(&first), "--json"]);
    assert!(check.status.success(), "{}", text(&check));
    let summary: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(summary["images"]["checked"], 120);
    assert_eq!(summary["images"]["missing"], 0);
    let bad = vitrine(&[
        "catalog",
        "import",
        path(&export),
        "--format",
        "csv",
        "--mapping",
        path(&mapping),
        "--out",
        path(&again),
        "--split-ratios",
        "80/20",
    ]);
    assert!(!bad.status.success() && text(&bad).contains("80/20"), "{}", text(&bad));
}
