// Validates glTF / GLB files with the Khronos glTF validator: prints one JSON line per file
// with the issue counts and messages. Usage: node validate.mjs FILE...
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

for (const path of process.argv.slice(2)) {
  const report = await validator.validateBytes(new Uint8Array(await readFile(path)), { maxIssues: 50 });
  const { numErrors, numWarnings, numInfos, messages } = report.issues;
  console.log(JSON.stringify({ path, numErrors, numWarnings, numInfos,
    messages: messages.map((m) => `${m.severity} ${m.code} ${m.pointer ?? ""}: ${m.message}`) }));
}
