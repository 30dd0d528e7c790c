// Runs a wasm32-wasip1 test binary under Node.js's WASI (cargo's runner for
// that target): `node wasi_runner.mjs file.wasm [test arguments]`.
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";

const wasi = new WASI({ version: "preview1", args: process.argv.slice(2), env: {}, preopens: {} });
const module = await WebAssembly.compile(readFileSync(process.argv[2]));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
