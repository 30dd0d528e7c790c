//! The `products` part: one [`Product`] as a JSON object a line, in index item
//! order (JSON lines keep a damaged line's number in the error).

use super::Product;

pub fn encode_products(products: &[Product]) -> Vec<u8> {
    let mut out = Vec::new();
    for product in products {
        serde_json::to_writer(&mut out, product).expect("a product serialises to memory");
        out.push(b'\n');
    }
    out
}

/// Reads [`encode_products`]'s lines; an error names the line. Blank lines
/// are skipped.
pub fn decode_products(bytes: &[u8]) -> Result<Vec<Product>, String> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(number, line)| serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", number + 1)))
        .collect()
}
