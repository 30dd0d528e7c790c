#!/usr/bin/env python3
"""The transformers.js side of bench/browser_compare.sh, prepared once (cached under --out).

1. all-MiniLM-L6-v2 exported to ONNX from the project's own weights
   (models/all-MiniLM-L6-v2: config.json, model.safetensors, tokenizer.json),
   laid out as transformers.js reads a model folder:
     <out>/models/all-MiniLM-L6-v2/{config.json, tokenizer.json, tokenizer_config.json}
     <out>/models/all-MiniLM-L6-v2/onnx/model.onnx            fp32   (dtype 'fp32')
     <out>/models/all-MiniLM-L6-v2/onnx/model_quantized.onnx  int8   (dtype 'q8')
   The graph is written node by node with onnx.helper, in the form the PyTorch
   exporter gives Hugging Face's BertModel at opset 14 (decomposed LayerNorm and
   erf GELU, the 1 - mask times float32-min attention mask, reshapes to heads),
   so that onnxruntime's graph optimiser fuses it the same way: there is no
   importable PyTorch here (the project's .venv holds libtorch for tch only).
   q8 is what transformers.js's scripts/quantize.py makes for `model_quantized.onnx`:
   onnxruntime's dynamic quantisation (IntegerOps), int8 weights (no Conv in
   BERT), per tensor, full range, MatMulConstBOnly, EnableSubgraph.
2. Checks: the fp32 ONNX model in onnxruntime against an independent float64
   numpy forward pass of the same weights with sentence-transformers pooling
   (mean over the tokens, L2 norm), cosine >= 0.999 asserted; padded batches
   against single sequences; q8 against fp32 (printed).
3. The 50 queries of 9-16 tokens (see select_queries) -> <out>/queries.json,
   with the numpy reference embeddings -> <out>/reference.json.
4. The catalog: every article of articles.csv as `title. description`
   (core/src/catalog/schema.rs Item::text), embedded with the fp32 ONNX model,
   mean-pooled and normalised -> <out>/data/vectors.f32 (N x 384 little-endian
   float32, articles.csv order) and <out>/data/items.json (ids, product codes).

Usage: prepare.py --model models/all-MiniLM-L6-v2 --catalog ../shared/data/hm --out target/browser-compare
"""

import argparse
import csv
import hashlib
import json
import math
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MIN_TOKENS, MAX_TOKENS, N_QUERIES = 9, 16, 50
# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (its sentence_bert_config.json).
CATALOG_MAX_TOKENS = 256
OPSET = 14
MODEL_ID = "all-MiniLM-L6-v2"
MIN_COSINE = 0.999
FORMAT = "browser-compare-prepare-v2"  # bump to invalidate the caches


def log(message):
    print(f"[prepare] {message}", flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- the graph


class Graph:
    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def const(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def scalar(self, value, dtype=np.float32):
        self.count += 1
        return self.const(f"const_{self.count}", np.array(value, dtype=dtype))

    def ints(self, values):
        self.count += 1
        return self.const(f"const_{self.count}", np.array(values, dtype=np.int64))

    def op(self, op_type, inputs, scope, output=None, **attrs):
        self.count += 1
        name = f"/{scope}/{op_type}_{self.count}"
        out = output or f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def build_bert(w, cfg):
    """BertModel's last_hidden_state, as torch.onnx.export writes it at opset 14."""
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head = hidden // heads
    eps = cfg["layer_norm_eps"]
    g = Graph()

    def linear(x, prefix, scope):
        weight = g.const(f"{prefix}.weight.T", w[f"{prefix}.weight"].T)  # [in, out], as the exporter stores it
        bias = g.const(f"{prefix}.bias", w[f"{prefix}.bias"])
        return g.op("Add", [bias, g.op("MatMul", [x, weight], scope)], scope)

    def layer_norm(x, prefix, scope, output=None):
        mean = g.op("ReduceMean", [x], scope, axes=[-1], keepdims=1)
        centred = g.op("Sub", [x, mean], scope)
        var = g.op("ReduceMean", [g.op("Pow", [centred, g.scalar(2.0)], scope)], scope, axes=[-1], keepdims=1)
        std = g.op("Sqrt", [g.op("Add", [var, g.scalar(eps)], scope)], scope)
        normed = g.op("Div", [centred, std], scope)
        scaled = g.op("Mul", [normed, g.const(f"{prefix}.weight", w[f"{prefix}.weight"])], scope)
        return g.op("Add", [scaled, g.const(f"{prefix}.bias", w[f"{prefix}.bias"])], scope, output=output)

    # Embeddings: words + token types + positions[:, :seq_len], LayerNorm.
    s = "embeddings"
    words = g.op("Gather", [g.const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]), "input_ids"], s)
    types = g.op("Gather", [g.const("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"]), "token_type_ids"], s)
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"], s), g.ints(1)], s, axis=0)
    ends = g.op("Unsqueeze", [seq_len, g.ints([0])], s)
    position_ids = g.op("Slice", [g.const("embeddings.position_ids", w["embeddings.position_ids"].astype(np.int64)), g.ints([0]), ends, g.ints([1])], s)
    positions = g.op("Gather", [g.const("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]), position_ids], s)
    x = g.op("Add", [g.op("Add", [words, types], s), positions], s)
    x = layer_norm(x, "embeddings.LayerNorm", s)

    # The extended attention mask: (1 - mask[:, None, None, :]) * float32 min.
    s = "mask"
    m = g.op("Unsqueeze", [g.op("Unsqueeze", ["attention_mask", g.ints([1])], s), g.ints([2])], s)
    m = g.op("Cast", [m], s, to=TensorProto.FLOAT)
    m = g.op("Sub", [g.scalar(1.0), m], s)
    mask = g.op("Mul", [m, g.scalar(np.finfo(np.float32).min)], s)

    to_heads = g.ints([0, 0, heads, head])
    to_hidden = g.ints([0, 0, hidden])
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        s = f"encoder/layer.{i}/attention"
        q = g.op("Transpose", [g.op("Reshape", [linear(x, f"{p}.attention.self.query", s), to_heads], s)], s, perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [linear(x, f"{p}.attention.self.key", s), to_heads], s)], s, perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [linear(x, f"{p}.attention.self.value", s), to_heads], s)], s, perm=[0, 2, 1, 3])
        scores = g.op("Div", [g.op("MatMul", [q, k], s), g.scalar(math.sqrt(head))], s)
        probs = g.op("Softmax", [g.op("Add", [scores, mask], s)], s, axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, v], s)], s, perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, to_hidden], s)
        attended = g.op("Add", [linear(context, f"{p}.attention.output.dense", s), x], s)
        x = layer_norm(attended, f"{p}.attention.output.LayerNorm", s)
        s = f"encoder/layer.{i}/ffn"
        up = linear(x, f"{p}.intermediate.dense", s)
        erf = g.op("Erf", [g.op("Div", [up, g.scalar(1.4142135381698608)], s)], s)
        gelu = g.op("Mul", [g.op("Mul", [up, g.op("Add", [erf, g.scalar(1.0)], s)], s), g.scalar(0.5)], s)
        down = g.op("Add", [linear(gelu, f"{p}.output.dense", s), x], s)
        last = i == cfg["num_hidden_layers"] - 1
        x = layer_norm(down, f"{p}.output.LayerNorm", s, output="last_hidden_state" if last else None)

    dims = ["batch_size", "sequence_length"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, dims + [hidden])]
    graph = helper.make_graph(g.nodes, "bert", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vitrine bench/browser_compare/prepare.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# ------------------------------------------------------ the float64 reference


def erf(x):
    return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)


def reference_embedding(w, cfg, ids):
    """sentence-transformers' all-MiniLM-L6-v2 on one unpadded sequence, float64 numpy."""
    W = lambda k: w[k].astype(np.float64)
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head, eps, n = hidden // heads, cfg["layer_norm_eps"], len(ids)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * W(f"{p}.weight") + W(f"{p}.bias")

    def lin(x, p):
        return x @ W(f"{p}.weight").T + W(f"{p}.bias")

    x = W("embeddings.word_embeddings.weight")[ids] + W("embeddings.position_embeddings.weight")[:n] + W("embeddings.token_type_embeddings.weight")[0]
    x = ln(x, "embeddings.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        split = lambda t: t.reshape(n, heads, head).transpose(1, 0, 2)
        q, k, v = (split(lin(x, f"{p}.attention.self.{m}")) for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = ln(lin(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        up = lin(x, f"{p}.intermediate.dense")
        gelu = 0.5 * up * (1.0 + erf(up / math.sqrt(2.0)))
        x = ln(lin(gelu, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


# ------------------------------------------------------------ onnxruntime


def session(path, threads=1, optimized_to=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_to:
        options.optimized_model_filepath = str(optimized_to)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed_batch(sess, batch_ids):
    """Mean pooling over the attention mask, then L2 norm (transformers.js: pooling 'mean', normalize true)."""
    width = max(len(ids) for ids in batch_ids)
    input_ids = np.zeros((len(batch_ids), width), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, ids in enumerate(batch_ids):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    (hidden,) = sess.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)})
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def fused_ops(path, scratch):
    """Op types of the graph after onnxruntime's optimiser (level all), as the session will run it."""
    ort.set_default_logger_severity(3)  # not the warning that an optimised model is machine-specific
    session(path, optimized_to=scratch)
    counts = Counter(node.op_type for node in onnx.load(str(scratch), load_external_data=False).graph.node)
    scratch.unlink()
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ------------------------------------------------------------- the catalog


def catalog_items(catalog):
    """articles.csv as vitrine's H&M importer reads it: id, product code, `title. description`, split."""
    splits = {}
    if (catalog / "splits.csv").exists():
        with open(catalog / "splits.csv", newline="", encoding="utf-8") as f:
            splits = {row["article_id"]: row["split"] for row in csv.DictReader(f)}
    items = []
    with open(catalog / "articles.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            title, description = row["prod_name"].strip(), row["detail_desc"].strip()
            text = f"{title}. {description}" if title and description else title or description
            items.append({"id": row["article_id"], "group": row["product_code"], "text": text, "split": splits.get(row["article_id"])})
    return items


def select_queries(items, count_tokens):
    """bench/text_encoder.sh's rule (core/examples/text_encoder_bench.rs): over the test split in
    catalog order, the i-th query is the longest word prefix of an item's text that fits in
    9 + i mod 8 tokens ([CLS] and [SEP] included), when that has at least 9; duplicates skipped.
    The one difference: tokens are counted without truncation (that example's tokenizer cuts at 16,
    so its budget-16 queries come out as whole descriptions of up to ~60 tokens)."""
    out = []
    for item in items:
        if item["split"] not in (None, "test"):
            continue
        words = item["text"].split()
        budget = MIN_TOKENS + len(out) % (MAX_TOKENS - MIN_TOKENS + 1)
        best = None
        for n in range(1, len(words) + 1):
            prefix = " ".join(words[:n])
            if count_tokens(prefix) > budget:
                break
            best = prefix
        if best is not None and count_tokens(best) >= MIN_TOKENS and best not in [q["text"] for q in out]:
            out.append({"text": best, "tokens": count_tokens(best), "article_id": item["id"], "group": item["group"]})
        if len(out) == N_QUERIES:
            return out
    sys.exit(f"only {len(out)} texts of {MIN_TOKENS}-{MAX_TOKENS} tokens in the catalog's test split")


# -------------------------------------------------------------------- main


TOKENIZER_CONFIG = {
    # What sentence-transformers/all-MiniLM-L6-v2 ships as tokenizer_config.json (transformers.js reads
    # it beside tokenizer.json); the project's model folder has tokenizer.json only.
    "clean_up_tokenization_spaces": True,
    "cls_token": "[CLS]",
    "do_basic_tokenize": True,
    "do_lower_case": True,
    "mask_token": "[MASK]",
    "model_max_length": 512,
    "never_split": None,
    "pad_token": "[PAD]",
    "sep_token": "[SEP]",
    "strip_accents": None,
    "tokenize_chinese_chars": True,
    "tokenizer_class": "BertTokenizer",
    "unk_token": "[UNK]",
}


def export(model_dir, out):
    folder = out / "models" / MODEL_ID
    onnx_dir = folder / "onnx"
    stamp_file = out / "export.stamp"
    sources = [model_dir / "config.json", model_dir / "model.safetensors", model_dir / "tokenizer.json", Path(__file__)]
    stamp = hashlib.sha256((FORMAT + "".join(sha256_file(p) for p in sources)).encode()).hexdigest()
    fp32, q8 = onnx_dir / "model.onnx", onnx_dir / "model_quantized.onnx"
    if stamp_file.exists() and stamp_file.read_text() == stamp and fp32.exists() and q8.exists():
        log(f"ONNX export … cached: {fp32} ({fp32.stat().st_size} B), {q8} ({q8.stat().st_size} B)")
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    onnx_dir.mkdir(parents=True)
    cfg = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    started = time.time()
    onnx.save(build_bert(weights, cfg), str(fp32))
    log(f"ONNX export fp32 (opset {OPSET}) … {fp32} ({fp32.stat().st_size} B) in {time.time() - started:.1f} s")
    started = time.time()
    quantize_dynamic(
        str(fp32),
        str(q8),
        # DESIGN.md §8's anchor: per-channel, reduced-range int8 weights (per
        # tensor, the queries' cosine to fp32 drops to about 0.93).
        per_channel=True,
        reduce_range=True,
        weight_type=QuantType.QInt8,
        extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True},
    )
    log(f"ONNX q8 (quantize_dynamic, QInt8 weights, per channel, reduced range) … {q8} ({q8.stat().st_size} B) in {time.time() - started:.1f} s")
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(model_dir / name, folder / name)
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    stamp_file.write_text(stamp)
    return folder


def check_and_queries(model_dir, folder, catalog, out, items):
    cfg = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()  # the file pads to 128 and truncates at 128
    tok.no_truncation()
    count = lambda text: len(tok.encode(text).ids)
    queries = select_queries(items, count)
    lengths = [q["tokens"] for q in queries]
    log(f"queries: {len(queries)} from the test split of {catalog}, {min(lengths)}-{max(lengths)} tokens (mean {np.mean(lengths):.1f}) → {out / 'queries.json'}")

    fp32, q8 = folder / "onnx" / "model.onnx", folder / "onnx" / "model_quantized.onnx"
    s32, s8 = session(fp32), session(q8)
    ids = [tok.encode(q["text"]).ids for q in queries]
    started = time.time()
    reference = [reference_embedding(weights, cfg, i) for i in ids]
    log(f"reference: float64 numpy BERT + mean pooling + L2 norm for the {len(ids)} queries in {time.time() - started:.1f} s")
    onnx32 = [embed_batch(s32, [i])[0] for i in ids]
    onnx8 = [embed_batch(s8, [i])[0] for i in ids]
    c32 = [cosine(a, b) for a, b in zip(onnx32, reference)]
    c8 = [cosine(a, b) for a, b in zip(onnx8, reference)]
    log(f"check: ONNX fp32 (onnxruntime {ort.__version__}) vs reference, cosine min {min(c32):.6f} mean {np.mean(c32):.6f} over {len(ids)} queries")
    log(f"check: ONNX q8 vs reference, cosine min {min(c8):.6f} mean {np.mean(c8):.6f}")
    assert min(c32) >= MIN_COSINE, f"ONNX fp32 embeddings differ from the reference: min cosine {min(c32)}"
    # Padded batches (how the catalog is embedded) against one sequence at a time.
    batch = embed_batch(s32, ids[:8])
    cb = [cosine(a, b) for a, b in zip(batch, onnx32[:8])]
    log(f"check: padded batch of 8 vs one at a time, cosine min {min(cb):.7f}")
    assert min(cb) >= 0.99999, f"padding changes the embeddings: {cb}"

    ops32 = fused_ops(fp32, out / "optimized.onnx")
    ops8 = fused_ops(q8, out / "optimized.onnx")
    log(f"onnxruntime's optimised fp32 graph: {ops32}")
    log(f"onnxruntime's optimised q8 graph: {ops8}")

    (out / "queries.json").write_text(json.dumps(queries, indent=1, ensure_ascii=False) + "\n")
    (out / "reference.json").write_text(
        json.dumps(
            {
                "what": "float64 numpy forward pass of models/all-MiniLM-L6-v2 + mean pooling + L2 norm, per query",
                "embeddings": [[round(float(v), 7) for v in e] for e in reference],
                "onnx_fp32_cosine": c32,
                "onnx_q8_cosine": c8,
                "onnxruntime_python": ort.__version__,
                "optimized_ops_fp32": ops32,
                "optimized_ops_q8": ops8,
            }
        )
        + "\n"
    )


def catalog_vectors(folder, catalog, out, items):
    data = out / "data"
    data.mkdir(exist_ok=True)
    vectors, items_file, stamp_file = data / "vectors.f32", data / "items.json", data / "vectors.stamp"
    fp32 = folder / "onnx" / "model.onnx"
    stamp = hashlib.sha256(f"{FORMAT} {CATALOG_MAX_TOKENS} {sha256_file(fp32)} {sha256_file(folder / 'tokenizer.json')} {sha256_file(catalog / 'articles.csv')}".encode()).hexdigest()
    if stamp_file.exists() and stamp_file.read_text() == stamp and vectors.exists() and items_file.exists():
        log(f"catalog vectors … cached: {vectors} ({len(items)} × 384 float32, {vectors.stat().st_size} B)")
        return
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(CATALOG_MAX_TOKENS)
    encoded = [tok.encode(item["text"]).ids for item in items]
    lengths = np.array([len(e) for e in encoded])
    log(
        f"catalog vectors: {len(items)} articles, {lengths.min()}-{lengths.max()} tokens (mean {lengths.mean():.1f}; "
        f"{int((lengths >= CATALOG_MAX_TOKENS).sum())} cut at {CATALOG_MAX_TOKENS}), fp32 ONNX in onnxruntime, 2 threads …"
    )
    sess = session(fp32, threads=2)
    order = np.argsort(lengths, kind="stable")
    result = np.zeros((len(items), 384), dtype=np.float32)
    started, done, batch_size = time.time(), 0, 32
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        result[rows] = embed_batch(sess, [encoded[r] for r in rows])
        done += len(rows)
        if done % 1024 < batch_size or done == len(order):
            log(f"  {done}/{len(order)} articles, {time.time() - started:.0f} s")
    norms = np.linalg.norm(result, axis=1)
    assert np.all(np.abs(norms - 1) < 1e-4), "a catalog vector is not unit length"
    result.astype("<f4").tofile(vectors)
    items_file.write_text(json.dumps({"ids": [i["id"] for i in items], "groups": [i["group"] for i in items]}) + "\n")
    stamp_file.write_text(stamp)
    log(f"catalog vectors … {vectors} ({vectors.stat().st_size} B) in {time.time() - started:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/all-MiniLM-L6-v2"))
    parser.add_argument("--catalog", type=Path, default=Path("../shared/data/hm"))
    parser.add_argument("--out", type=Path, default=Path("target/browser-compare"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    items = catalog_items(args.catalog)
    folder = export(args.model, args.out)
    check_and_queries(args.model, folder, args.catalog, args.out, items)
    catalog_vectors(folder, args.catalog, args.out, items)


if __name__ == "__main__":
    main()
