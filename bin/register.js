// `node --import ./bin/register.js file.ts`: TypeScript through tsx, TF.js's ESM gradients through our resolve
// hook, and the Node 20 polyfills. Worker threads and child processes of peertrain start with this.
import { register as registerHook } from 'node:module';
import { register } from 'tsx/esm/api';

registerHook('./esm-resolve-hook.js', import.meta.url);
register();
await import('../node/polyfills.ts');
