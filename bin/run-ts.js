#!/usr/bin/env node
// Runs a TypeScript module of this repository (benchmarks, scripts) the same way the CLI runs.
import { register as registerHook } from 'node:module';
import { register } from 'tsx/esm/api';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const [, , file, ...rest] = process.argv;
if (!file) {
  console.error('usage: run-ts.js FILE.ts [args...]');
  process.exit(2);
}
registerHook('./esm-resolve-hook.js', import.meta.url);
register();
process.argv = [process.argv[0], resolve(file), ...rest];
await import('../node/polyfills.ts');
await import(pathToFileURL(resolve(file)).href);
