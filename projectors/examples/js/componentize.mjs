// Builds projector.js into a component with ComponentizeJS's library API
// (its `jco componentize` front end is not used: see README.md).
// Usage: node componentize.mjs <projector.js> <wit dir> <out.wasm>
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const [source, witPath, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs <projector.js> <wit dir> <out.wasm>');
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: source,
  witPath,
  worldName: 'projector',
  // Without these the engine imports wasi:http, which the host does not
  // give projectors (it refuses the component at load).
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
