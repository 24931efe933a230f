// Drives yaml-language-server's language service headless (it has no CLI), the way an editor
// would: every example must get no diagnostic at all (the server reports schema violations as
// warnings, so any diagnostic fails), and every bad manifest marked `yamlls` in
// tests/bad-manifests/cases.tsv must get at least one on its expected line.
//
// Usage: node check.mjs REPO_ROOT
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { getLanguageService } from "yaml-language-server";
import { TextDocument } from "vscode-languageserver-textdocument";

const root = resolve(process.argv[2] ?? "../..");
const schemaUri = pathToFileURL(join(root, "timctl.schema.json")).href;

const ls = getLanguageService({
  schemaRequestService: async (uri) => readFileSync(fileURLToPath(uri), "utf8"),
  workspaceContext: {
    resolveRelativePath: (rel, resource) => new URL(rel, resource).href,
  },
});
ls.configure({
  validate: true,
  hover: false,
  completion: false,
  // The bad manifests carry no modeline; the examples' own modelines take precedence.
  schemas: [{ uri: schemaUri, fileMatch: ["*.yaml", "*.yml"] }],
});

async function diagnose(path) {
  const uri = pathToFileURL(path).href;
  const doc = TextDocument.create(uri, "yaml", 1, readFileSync(path, "utf8"));
  return ls.doValidation(doc, false);
}

function yamlFiles(dir, skip = []) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (skip.includes(p)) return [];
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

let failures = 0;
// examples/ci holds CI pipelines and examples/serve deployment files, not manifests.
const examples = yamlFiles(join(root, "examples"), [join(root, "examples", "ci"), join(root, "examples", "serve")]);
for (const file of examples) {
  const diags = await diagnose(file);
  for (const d of diags) {
    console.error(`FAIL ${file}:${d.range.start.line + 1}: unexpected diagnostic: ${d.message}`);
    failures++;
  }
}

const corpus = join(root, "tests", "bad-manifests");
let checked = 0;
for (const line of readFileSync(join(corpus, "cases.tsv"), "utf8").split("\n")) {
  if (!line.trim() || line.startsWith("#")) continue;
  const [, place, clients] = line.split("\t");
  const client = clients.split(",").find((c) => c.startsWith("yamlls"));
  if (!client) continue;
  const [file, wantLine] = place.split(":");
  const expected = client.includes("@") ? Number(client.split("@")[1]) : Number(wantLine);
  const diags = await diagnose(join(corpus, file));
  checked++;
  const hit = diags.some((d) => expected === 0 || d.range.start.line + 1 === expected);
  if (!hit) {
    const got = diags.map((d) => `${d.range.start.line + 1}: ${d.message}`).join("; ") || "none";
    console.error(`FAIL ${file}: expected a diagnostic on line ${expected}, got ${got}`);
    failures++;
  }
}
console.log(`yaml-language-server: ${examples.length} examples, ${checked} bad manifests, ${failures} failures`);
process.exit(failures === 0 ? 0 : 1);
