#!/usr/bin/env node
// The CLI is written in TypeScript; tsx compiles it on load so there is no build step to forget or go stale.
await import('./register.js');
await import('../cli/main.ts');
