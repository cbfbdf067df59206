// Validates prometheus-operator objects (ServiceMonitor, PodMonitor,
// PrometheusRule) with @kubernetes-models/prometheus-operator, whose
// validators are generated from the operator's CRD schemas (types, enums,
// required fields, formats). Usage: node validate_monitoring.mjs FILE.json,
// where FILE holds a JSON list of objects; prints one line per object and
// exits 1 when any is invalid. NODE_PATH points at .tools/npm/node_modules.
import { readFileSync } from "node:fs";
import { join } from "node:path";

const modules = process.env.NODE_PATH;
const load = async (kind) =>
  (await import(join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", `${kind}.js`)))[kind];

const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const doc of docs) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  try {
    if (doc.apiVersion !== "monitoring.coreos.com/v1") throw new Error(`unexpected apiVersion ${doc.apiVersion}`);
    const Model = await load(doc.kind);
    new Model(doc).validate();
    console.log(`ok ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`INVALID ${name}: ${err.message}`);
  }
}
process.exit(failed ? 1 : 0);
