#!/usr/bin/env node
// Runs a TypeScript module of this repository (benchmarks, scripts) the same way the CLI runs.
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const [, , file, ...rest] = process.argv;
if (!file) {
  console.error('usage: run-ts.js FILE.ts [args...]');
  process.exit(2);
}
await import('./register.js');
process.argv = [process.argv[0], resolve(file), ...rest];
await import(pathToFileURL(resolve(file)).href);
