/**
 * Test and bench harness (development only): real `peertrain` processes with output capture and cleanup
 * (processes.ts, cli.ts), a headless Chromium (browser.ts, Debian's chromium via playwright-core), and a local
 * mesh of libp2p nodes on 127.0.0.1 (local-mesh.ts). Tests and benches import it; the product never does.
 *
 *   const coord = startProc(['coordinator', '--run-dir', dir, '--http-port', '0']);
 *   const info = await waitForJoin(dir, coord);
 *   const node = startNode(info);
 *   // ...
 *   killAllProcs();
 */
export * from './processes.ts';
export * from './cli.ts';
export * from './local-mesh.ts';
