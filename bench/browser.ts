/**
 * Browser vs Node peer speed on this machine: a coordinator, one Node peer (1 worker) and one headless
 * Chromium tab (WASM) train together; after `--rounds` rounds, both peers' measured tokens/s are read from the
 * coordinator's status. Prints one JSON line.
 */
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { parseArgs } from '../cli/args.ts';
import { launchBrowser } from '../harness/browser.ts';
import { killAllProcs, startNode, startProc, status, waitFor, waitForJoin } from '../harness/processes.ts';

const { flags } = parseArgs(process.argv.slice(2), { rounds: { type: 'int', help: '', default: 30, min: 1 } });
const runDir = join(mkdtempSync(join(tmpdir(), 'peertrain-bench-browser-')), 'run');
const coord = startProc(['coordinator', '--run-dir', runDir, '--http-port', '0']);
try {
  const info = await waitForJoin(runDir, coord);
  const node = startNode(info);
  await waitFor('the node to train', () => /\] round \d+ \| loss/.test(node.output()), 180_000);
  const ctx = await launchBrowser();
  const page = await ctx.newPage();
  await page.goto(info.url);
  await page.click('#contribute');
  const peerId = await waitFor('the browser to join', async () => page.evaluate(() => (window as unknown as { peertrain: { status: { peerId?: string } } }).peertrain.status.peerId), 180_000);
  const start = (await status(info.url))!.round;
  await waitFor('rounds with both peers', async () => ((await status(info.url))?.round ?? 0) >= start + Number(flags.rounds), 1_200_000);
  const s = (await status(info.url))!;
  const browser = s.peers.find((p) => p.id === peerId);
  const nodePeer = s.peers.find((p) => p.kind === 'node');
  const backend = await page.evaluate(() => (window as unknown as { peertrain: { status: { backendDetail?: string } } }).peertrain.status.backendDetail);
  console.log(JSON.stringify({ rounds: Number(flags.rounds), preset: 'tiny', browserBackend: `wasm (${backend})`, browserTokensPerSec: Math.round(browser?.tokensPerSec ?? 0), nodeTokensPerSec: Math.round(nodePeer?.tokensPerSec ?? 0), ratio: browser && nodePeer ? Number((browser.tokensPerSec / nodePeer.tokensPerSec).toFixed(3)) : null, note: 'each peer\'s own measured speed while training together (tiny, 1 replica worker in the Node peer, 2 shared cores)' }));
  await ctx.close();
} finally {
  killAllProcs();
}
process.exit(0);
