// Validates Istio manifests (YAML, multi-document) against Istio's published types.
//
//   node scripts/istio-validate/validate.mjs --deps DIR [--json] FILE.yaml...
//   (scripts/istio-validate.sh installs DIR and calls this; use that.)
//
// DIR holds node_modules installed from package.json/package-lock.json beside this file:
//   @kubernetes-models/istio  model classes generated from Istio's CRDs
//                             (manifests/charts/base/files/crd-all.gen.yaml of Istio
//                             1.29.2). `new Model(obj).validate()` runs the CRD's
//                             OpenAPI v3 schema as compiled JSON-schema validators:
//                             types, enums, required fields, string/number bounds.
//   typescript                the same package's TypeScript interfaces, checked with the
//                             compiler: an object literal with a property the interface
//                             does not have is an error. The JSON schemas alone accept
//                             unknown fields (Kubernetes would silently prune them, so a
//                             typo such as `phse: AUTHN` would deploy and do nothing).
//   yaml                      YAML parser.
// Plus the few CEL rules (x-kubernetes-validations) of those CRDs that the compiled
// validators cannot run: selector and targetRef(s) are mutually exclusive.
//
// Prints "ok|FAIL <file>#<doc> <apiVersion> <kind> <namespace>/<name>" and the problems;
// exits 1 if any document fails, 2 on a usage/installation error.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function usage(msg) {
  process.stderr.write(`istio-validate: ${msg}\nusage: validate.mjs --deps DIR [--json] FILE...\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
let deps = null;
let asJson = false;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--deps") deps = args[++i];
  else if (args[i] === "--json") asJson = true;
  else files.push(args[i]);
}
if (!deps) usage("--deps DIR is required");
if (files.length === 0) usage("no files");
const modules = path.resolve(deps, "node_modules");
const istioDir = path.join(modules, "@kubernetes-models", "istio");
if (!fs.existsSync(istioDir)) usage(`${istioDir} missing; run scripts/istio-validate.sh`);

const importDep = (rel) => import(pathToFileURL(path.join(modules, rel)).href);
const YAML = (await importDep("yaml/dist/index.js")).default ?? (await importDep("yaml/dist/index.js"));
const ts = (await importDep("typescript/lib/typescript.js")).default;
const istioVersion = JSON.parse(fs.readFileSync(path.join(istioDir, "package.json"), "utf8")).version;

// -- documents -------------------------------------------------------------------
const docs = [];
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  const parsed = YAML.parseAllDocuments(text);
  parsed.forEach((d, i) => {
    const source = `${file}#${i}`;
    if (d.errors.length) {
      docs.push({ source, obj: null, problems: d.errors.map((e) => `YAML: ${e.message}`) });
      return;
    }
    const obj = d.toJS();
    if (obj === null || obj === undefined) return; // empty document (e.g. trailing ---)
    docs.push({ source, obj, problems: [] });
  });
}

// apiVersion + kind -> the model module, e.g. extensions.istio.io/v1alpha1/WasmPlugin
function modelPath(obj) {
  if (typeof obj !== "object" || Array.isArray(obj)) return null;
  const [group, version] = String(obj.apiVersion ?? "").split("/");
  const kind = String(obj.kind ?? "");
  if (!group || !version || !/^[A-Za-z]+$/.test(kind)) return null;
  const rel = path.join(group, version, `${kind}.js`);
  return fs.existsSync(path.join(istioDir, rel)) ? { group, version, kind } : null;
}

// -- 1. JSON-schema validation (the CRD's openAPIV3Schema) -------------------------
for (const d of docs) {
  if (!d.obj) continue;
  const m = modelPath(d.obj);
  if (!m) {
    d.problems.push(`not an Istio kind known to @kubernetes-models/istio ${istioVersion}: ` +
      `apiVersion=${d.obj.apiVersion} kind=${d.obj.kind}`);
    continue;
  }
  d.model = m;
  const mod = await import(pathToFileURL(path.join(istioDir, m.group, m.version, `${m.kind}.js`)).href);
  try {
    new mod[m.kind](d.obj).validate();
  } catch (e) {
    const errs = Array.isArray(e.errors) ? e.errors : [{ message: String(e) }];
    for (const x of errs) {
      const where = x.instancePath || "/";
      const detail = x.message || x.keyword || "";
      const params = x.params ? ` ${JSON.stringify(x.params)}` : "";
      d.problems.push(`schema: ${where}: ${detail}${params}`);
    }
  }
  // Metadata the API server insists on.
  const name = d.obj.metadata?.name;
  if (typeof name !== "string" || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) {
    d.problems.push(`metadata.name: missing or not a DNS-1123 subdomain (${JSON.stringify(name)})`);
  }
  // CEL rules of the WasmPlugin / AuthorizationPolicy CRDs (not run by the validators).
  const spec = d.obj.spec ?? {};
  const hasSelector = spec.selector !== undefined;
  const hasTarget = spec.targetRef !== undefined || spec.targetRefs !== undefined;
  if (["WasmPlugin", "AuthorizationPolicy", "RequestAuthentication", "Telemetry"].includes(m.kind) &&
    hasSelector && hasTarget) {
    d.problems.push("CEL: only one of targetRefs or selector can be set");
  }
}

// -- 2. TypeScript: the interfaces, with excess-property checks ---------------------
const typed = docs.filter((d) => d.model);
if (typed.length) {
  const lines = [];
  const ranges = [];
  typed.forEach((d, i) => {
    const { group, version, kind } = d.model;
    lines.push(`import type { I${kind} as T${i} } from "@kubernetes-models/istio/${group}/${version}/${kind}";`);
  });
  typed.forEach((d, i) => {
    const body = JSON.stringify(d.obj, null, 2).split("\n");
    const start = lines.length + 1;
    lines.push(`export const doc${i}: T${i} = ${body[0]}`, ...body.slice(1));
    lines[lines.length - 1] += ";";
    ranges.push({ d, start, end: lines.length, body });
  });
  // Inside DIR, so "@kubernetes-models/istio" resolves to DIR/node_modules.
  const tsFile = path.join(path.resolve(deps), `check-${process.pid}.mts`);
  fs.writeFileSync(tsFile, lines.join("\n") + "\n");
  try {
    const program = ts.createProgram([tsFile], {
      strict: true, noEmit: true, skipLibCheck: true, types: [],
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
    });
    const report = (line, msg) => {
      const r = ranges.find((x) => line >= x.start && line <= x.end);
      if (r) {
        const at = r.body[line - r.start]?.trim() ?? "";
        r.d.problems.push(`types: ${msg} (at: ${at})`);
        return true;
      }
      return false;
    };
    // Unknown fields, at any depth. The compiler's own excess-property check gives up on
    // some of these types (intersections with the CRD's oneOf), so walk every object
    // literal and look each key up in the type the interface expects there.
    const checker = program.getTypeChecker();
    const NULLISH = ts.TypeFlags.Undefined | ts.TypeFlags.Null;
    const accepts = (type, name) => {
      if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return true;
      if (type.isUnion()) return type.types.some((t) => !(t.flags & NULLISH) && accepts(t, name));
      if (checker.getPropertyOfType(type, name)) return true;
      const apparent = checker.getApparentType(type);
      if (checker.getIndexInfosOfType(apparent).length) return true; // e.g. matchLabels
      // `{}` (pluginConfig: free-form Struct) takes anything.
      return checker.getPropertiesOfType(apparent).length === 0;
    };
    const sf = program.getSourceFile(tsFile);
    const visit = (node) => {
      if (ts.isObjectLiteralExpression(node)) {
        const type = checker.getContextualType(node);
        if (type) {
          for (const p of node.properties) {
            if (!ts.isPropertyAssignment(p)) continue;
            const name = ts.isStringLiteral(p.name) || ts.isIdentifier(p.name) ? p.name.text : null;
            if (name !== null && !accepts(type, name)) {
              const line = sf.getLineAndCharacterOfPosition(p.getStart(sf)).line + 1;
              report(line, `unknown field "${name}" (not in Istio's type, @kubernetes-models/istio ${istioVersion})`);
            }
          }
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
    for (const diag of ts.getPreEmitDiagnostics(program)) {
      const msg = ts.flattenDiagnosticMessageText(diag.messageText, "\n");
      let line = 0;
      if (diag.file && diag.start !== undefined) {
        line = diag.file.getLineAndCharacterOfPosition(diag.start).line + 1;
      }
      if (!report(line, msg.split("\n").pop())) {
        // An import or setup problem: every document is suspect.
        for (const x of ranges) x.d.problems.push(`types: ${msg}`);
      }
    }
  } finally {
    fs.rmSync(tsFile, { force: true });
  }
}

// -- report ------------------------------------------------------------------------
let failed = 0;
const out = [];
for (const d of docs) {
  const o = d.obj ?? {};
  const id = `${o.apiVersion ?? "?"} ${o.kind ?? "?"} ${o.metadata?.namespace ?? "-"}/${o.metadata?.name ?? "?"}`;
  const ok = d.problems.length === 0;
  if (!ok) failed++;
  out.push({ source: d.source, apiVersion: o.apiVersion, kind: o.kind, name: o.metadata?.name, ok, problems: d.problems });
  if (!asJson) {
    process.stdout.write(`${ok ? "ok" : "FAIL"} ${d.source} ${id}\n`);
    for (const p of d.problems) process.stdout.write(`  ${p}\n`);
  }
}
if (asJson) {
  process.stdout.write(JSON.stringify({ istio_models: istioVersion, typescript: ts.version, results: out }, null, 2) + "\n");
} else {
  process.stdout.write(`${docs.length - failed} ok, ${failed} failed ` +
    `(@kubernetes-models/istio ${istioVersion}, typescript ${ts.version})\n`);
}
process.exit(failed ? 1 : 0);
