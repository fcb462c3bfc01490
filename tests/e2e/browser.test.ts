/**
 * A browser tab contributes: coordinator + one node + one headless Chromium peer train together; the
 * coordinator counts the browser's contributions; after each averaging the browser's parameter hash equals the
 * node's; closing the tab mid-round does not stop the run. Backends: WASM trains; WebGPU (a software adapter
 * with --enable-unsafe-webgpu) gives the same loss; without WebGPU the worker falls back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';
import { runCli, tempDir, writeText } from '../../harness/cli.ts';
import { killAllProcs, startNode, startProc, status, waitFor, waitForJoin, type JoinInfo, type Proc } from '../../harness/processes.ts';
import { CHROMIUM, launchBrowser } from '../../harness/browser.ts';
import { loadGolden } from '../helpers/golden.ts';

const haveChromium = existsSync(CHROMIUM);
let dir: string;
let coord: Proc;
let node: Proc;
let info: JoinInfo;
const contexts: BrowserContext[] = [];

interface PagePeer {
  status: { state: string; peerId?: string; backend?: string; round?: number; loss?: number; paramHash?: string; roundsContributed?: number };
  log: string[];
  hashes: Record<number, string>;
}

const peerOf = (page: Page) => page.evaluate(() => (window as unknown as { peertrain: PagePeer }).peertrain) as Promise<PagePeer>;

describe.runIf(haveChromium)('a browser peer', () => {
  beforeAll(async () => {
    dir = tempDir('peertrain-browser-');
    const docs = loadBrownText().split('\n\n').slice(0, 60);
    const jsonl = writeText(dir, 'corpus.jsonl', docs.map((text) => JSON.stringify({ text })).join('\n'));
    const data = join(dir, 'data');
    expect((await runCli(['prepare', '--input', jsonl, '--tokenizer', 'char', '--seq-len', '33', '--out', data])).code).toBe(0);
    const config = writeText(dir, 'run.json', JSON.stringify({ model: { nLayer: 2, nEmbd: 64, nHead: 4 }, evalEvery: 2, roundTimeoutSec: 30 }));
    const runDir = join(dir, 'run');
    coord = startProc(['coordinator', '--run-dir', runDir, '--http-port', '0', '--data', data, '--config', config, '--batch', '8', '--micro-batch', '2', '--seq', '32']);
    info = await waitForJoin(runDir, coord);
    node = startNode(info);
    await waitFor('the node to train', () => /\] round \d+ \| loss/.test(node.output()), 120_000, () => node.output());
  }, 240_000);

  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    killAllProcs();
  });

  it('trains with the node for 5+ rounds, counted by the coordinator, hashes equal to the node\'s', async () => {
    const ctx = await launchBrowser();
    contexts.push(ctx);
    const page = await ctx.newPage();
    page.on('console', (m) => m.type() === 'error' && console.error(`[page] ${m.text()}`));
    await page.goto(info.url);
    expect(await page.locator('h1').textContent()).toBe('peertrain');
    await page.click('#contribute');
    const joined = await waitFor('the browser to join', async () => {
      const p = await peerOf(page);
      if (p.status.state === 'error') throw new Error(p.log.join('\n'));
      return p.status.peerId ? p : undefined;
    }, 120_000, () => coord.output());
    expect(joined.status.backend).toBe('wasm'); // no GPU here: WebGPU absent, software WebGL skipped
    const startRound = (await peerOf(page)).status.round ?? 0;
    // 5 rounds with the browser and the node in them.
    const nodeHashes = () => new Map([...node.output().matchAll(/\] round (\d+) \| .* \| (\d+) peers in the round \| params ([0-9a-f]{8})/g)].map((m) => [Number(m[1]), { peers: Number(m[2]), hash: m[3] }]));
    const shared = async () => {
      const p = await peerOf(page);
      const n = nodeHashes();
      return Object.keys(p.hashes).map(Number).filter((r) => n.get(r)?.peers === 2);
    };
    await waitFor('5 rounds shared by the browser and the node', async () => ((await shared()).length >= 5 ? true : undefined), 240_000, () => coord.output() + node.output());
    const done = await peerOf(page);
    // After each averaging the browser holds exactly the node's parameters.
    const n = nodeHashes();
    for (const r of await shared()) expect(done.hashes[r]).toBe(n.get(r)!.hash);
    const s = (await status(info.url))!;
    const browserRow = s.peers.find((p) => p.id === done.status.peerId)!;
    expect(browserRow.kind).toBe('browser');
    expect(browserRow.roundsContributed).toBeGreaterThanOrEqual(5);
    // The node's and the browser's parameter hashes agree after every averaging (the coordinator compares each
    // peer's reported hash with its own and asks a differing one to resync: none did).
    expect(coord.output()).not.toMatch(/out of sync/);
    expect(done.log.join('\n')).not.toMatch(/resync/);
    expect(startRound).toBeGreaterThanOrEqual(0);
    mkdirSync(join(dir, 'screens'), { recursive: true });
    await waitFor('a loss chart with data', async () => ((await status(info.url))?.history.filter((h) => h.loss !== null).length ?? 0) >= 3);
    await page.waitForTimeout(2500); // one more poll of the dashboard
    const shot = join(process.env.PEERTRAIN_SCREENSHOT_DIR ?? join(dir, 'screens'), 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`dashboard screenshot: ${shot}`);

    // Pause leaves the run cleanly; resuming rejoins (resyncing) and the tab's counter keeps adding up.
    const counted = done.status.roundsContributed!;
    await page.click('#pause');
    await waitFor('the paused tab to leave the peer list', async () => !(await status(info.url))?.peers.some((p) => p.id === done.status.peerId), 60_000);
    expect((await peerOf(page)).log.join('\n')).toMatch(/paused: by you/);
    await page.click('#contribute');
    await waitFor('contributions after resuming', async () => ((await peerOf(page)).status.roundsContributed ?? 0) >= counted + 2, 120_000, () => coord.output());

    // Closing the tab mid-round: the run goes on without it.
    const resumed = (await peerOf(page)).status.peerId!;
    const before = (await status(info.url))!.round;
    await ctx.close();
    await waitFor('rounds after the tab closed', async () => ((await status(info.url))?.round ?? 0) >= before + 3, 120_000, () => coord.output());
    // Its connection is gone: the coordinator drops it once it has been silent a while.
    await waitFor('the tab to leave the peer list', async () => !(await status(info.url))?.peers.some((p) => p.id === resumed), 60_000);
  }, 480_000);

  it('backends: WASM, WebGL and WebGPU (software adapter, --enable-unsafe-webgpu) give PyTorch\'s loss; without WebGPU the worker falls back', async () => {
    const g = loadGolden('causal');
    const order = (await import('../../engine/model.ts')).parameterSpecs(g.config);
    const fixture = { config: g.config, params: order.flatMap((p) => g.params[p.name].data), idx: g.idx, targets: g.targets };
    type Report = { backend?: string; loss?: number; error?: string; skipped?: Record<string, string> };
    const selftest = (page: Page, backend: string) => page.evaluate(([b, f]) => (window as unknown as { peertrainSelftest: (b: string, f: unknown) => Promise<unknown> }).peertrainSelftest(b as string, f), [backend, fixture] as const) as Promise<Report>;

    const gpu = await launchBrowser(['--enable-unsafe-webgpu']);
    contexts.push(gpu);
    const page = await gpu.newPage();
    await page.goto(info.url);
    for (const backend of ['wasm', 'webgl', 'webgpu']) {
      const r = await selftest(page, backend);
      expect(r.error, `${backend}: ${r.error}`).toBeUndefined();
      expect(r.backend).toBe(backend);
      // float32 on every backend, summed in different orders: well within 1e-4 relative of float64 PyTorch
      expect(Math.abs(r.loss! - g.loss) / g.loss, backend).toBeLessThan(1e-4);
    }
    await gpu.close();

    const plain = await launchBrowser();
    contexts.push(plain);
    const p2 = await plain.newPage();
    await p2.goto(info.url);
    const auto = await selftest(p2, 'auto');
    expect(auto.backend).toBe('wasm');
    expect(auto.skipped?.webgpu).toMatch(/no WebGPU|no WebGPU adapter|software/);
    const forced = await selftest(p2, 'webgpu');
    expect(forced.error).toMatch(/no backend could start \(webgpu: .*\); supported: webgpu, webgl, wasm, cpu/);
    await plain.close();
  }, 240_000);
});
