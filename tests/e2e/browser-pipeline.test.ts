/**
 * A browser tab as a pipeline stage peer: coordinator --stages 2, one node and one headless Chromium tab.
 * The tab cannot be dialled; it connects to the round's other peers itself, and activations, gradients and the
 * tied embedding's averaging cross those connections. Each serves one stage, and rounds complete with both.
 */
import type { PipelineReport, StatusReport } from '../../run/status-report.ts';
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';
import { runCli, tempDir, writeText } from '../../harness/cli.ts';
import { killAllProcs, startNode, startProc, status, waitFor, waitForJoin } from '../../harness/processes.ts';
import { CHROMIUM, launchBrowser } from '../../harness/browser.ts';

const contexts: BrowserContext[] = [];
afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  killAllProcs();
});

type PipelineStatus = StatusReport & { pipeline: PipelineReport };

const peerIdOf = (page: Page) => page.evaluate(() => (window as unknown as { peertrain: { status: { peerId?: string; state: string } } }).peertrain.status);

describe.runIf(existsSync(CHROMIUM))('a browser tab in a pipeline', () => {
  it('serves a stage next to a node: rounds complete with both, one stage each', async () => {
    const dir = tempDir('peertrain-browser-pipe-');
    const docs = loadBrownText().split('\n\n').slice(0, 60);
    const jsonl = writeText(dir, 'corpus.jsonl', docs.map((text) => JSON.stringify({ text })).join('\n'));
    const data = join(dir, 'data');
    expect((await runCli(['prepare', '--input', jsonl, '--tokenizer', 'char', '--seq-len', '33', '--out', data])).code).toBe(0);
    const config = writeText(dir, 'run.json', JSON.stringify({ model: { nLayer: 2, nEmbd: 64, nHead: 4 }, evalEvery: 5, roundTimeoutSec: 30 }));
    const runDir = join(dir, 'run');
    const coord = startProc(['coordinator', '--run-dir', runDir, '--http-port', '0', '--data', data, '--config', config, '--batch', '8', '--micro-batch', '2', '--seq', '32', '--stages', '2', '--min-peers', '2']);
    const info = await waitForJoin(runDir, coord);
    const node = startNode(info);
    const ctx = await launchBrowser();
    contexts.push(ctx);
    const page = await ctx.newPage();
    await page.goto(info.url);
    await page.click('#contribute');
    const me = await waitFor('the tab to join', async () => {
      const s = await peerIdOf(page);
      if (s.state === 'error') throw new Error('the tab failed to join');
      return s.peerId;
    }, 120_000, () => coord.output());
    const s = await waitFor('3 rounds with the tab and the node', async () => {
      const st = (await status(info.url)) as unknown as PipelineStatus | undefined;
      return st && st.history.filter((h) => h.participants === 2).length >= 3 ? st : undefined;
    }, 240_000, () => coord.output() + node.output());
    const stages = s.pipeline.stages;
    expect(stages).toHaveLength(2);
    expect(stages.map((st) => st.peers.length)).toEqual([1, 1]);
    expect(stages.flatMap((st) => st.peers)).toContain(me);
    expect(node.output()).toMatch(/round \d+ \| stage \d\/2/);
    await page.click('#stop');
    node.child.kill('SIGTERM');
    coord.child.kill('SIGTERM');
  }, 420_000);
});
