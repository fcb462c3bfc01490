/**
 * peertrain's entry points (the top floor): argument parsing, one module per command, the console logger.
 * Each command composes the parts below it — a coordinator, a peer runtime, the Node platform — and starts
 * them; nothing below imports from here. `bin/peertrain.js` runs `main.ts`.
 *
 *   import { coordinatorCommand } from './cli/index.ts';
 *   process.exitCode = await coordinatorCommand(['--rounds', '10', '--http-port', '0']);
 */
export { coordinatorCommand, COORDINATOR_FLAGS } from './coordinator-command.ts';
export { nodeCommand } from './node-command.ts';
export { consoleLogger } from './console-logger.ts';
export { parseArgs, helpText, type FlagSpec } from './args.ts';
