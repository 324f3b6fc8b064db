// Prints OpenClaw's own systemd unit, as its installer writes it
// (buildSystemdUnit in the installed package's dist/systemd-unit-*.mjs),
// for the description, program arguments and environment given as JSON in
// argv[2].
import { readdirSync } from "node:fs";
import path from "node:path";

const dist = "/opt/openclaw/node_modules/openclaw/dist";
const { description, programArguments, environment } = JSON.parse(process.argv[2]);
for (const name of readdirSync(dist).filter((n) => /^systemd-unit-.*\.mjs$/.test(n))) {
  const mod = await import(path.join(dist, name));
  const build = Object.values(mod).find((v) => typeof v === "function" && v.name === "buildSystemdUnit");
  if (build) {
    process.stdout.write(build({ description, programArguments, environment }));
    process.exit(0);
  }
}
process.stderr.write(`no buildSystemdUnit in ${dist}/systemd-unit-*.mjs\n`);
process.exit(1);
