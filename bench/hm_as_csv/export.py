"""Writes H&M's articles as a shop's plain product export: one CSV with no
colour groups and no baskets, and a column mapping, with the photos linked
beside it. The CSV keeps H&M's fixed split in a `split` column, so that the
model trained on it is measured on the same test split as the full H&M run.
Usage: python3 export.py HM_DIR OUT_DIR"""
import csv
import json
import os
import sys

hm, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
columns = ["sku", "folder", "name", "description", "category", "article_type", "colour", "pattern", "gender", "split"]
with open(os.path.join(hm, "splits.csv"), newline="", encoding="utf-8") as f:
    split_of = {row["article_id"]: row["split"] for row in csv.DictReader(f)}
with open(os.path.join(hm, "articles.csv"), newline="", encoding="utf-8") as src, \
        open(os.path.join(out, "hm-as-csv.csv"), "w", newline="", encoding="utf-8") as dst:
    writer = csv.writer(dst)
    writer.writerow(columns)
    rows = 0
    for a in csv.DictReader(src):
        writer.writerow([
            a["article_id"], a["article_id"][:3], a["prod_name"], a["detail_desc"], a["product_group_name"],
            a["product_type_name"], a["colour_group_name"], a["graphical_appearance_name"], a["index_group_name"],
            split_of.get(a["article_id"], ""),
        ])
        rows += 1
mapping = {
    "id": "sku",
    "title": "name",
    "description": "description",
    "category": "category",
    "subcategory": "article_type",
    "image_template": "images/{folder}/{sku}.jpg",
    "attributes": {"colour": "colour", "print": "pattern", "gender": "gender"},
    "split": "split",
}
with open(os.path.join(out, "mapping.json"), "w", encoding="utf-8") as f:
    json.dump(mapping, f, indent=2)
images = os.path.join(out, "images")
if not os.path.exists(images):
    os.symlink(os.path.abspath(os.path.join(hm, "images")), images)
print(f"{rows} articles → {out}/hm-as-csv.csv, {out}/mapping.json, {images} → {os.path.join(hm, 'images')}")
