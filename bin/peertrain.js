#!/usr/bin/env node
// The CLI is written in TypeScript; tsx compiles it on load so there is no build step to forget or go stale.
import { register as registerHook } from 'node:module';
import { register } from 'tsx/esm/api';

registerHook('./esm-resolve-hook.js', import.meta.url);
register();
await import('../node/polyfills.ts');
await import('../node/cli.ts');
