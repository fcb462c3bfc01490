/** Debian's headless Chromium driven by playwright-core, with a fresh profile per launch. */
import { chromium, type BrowserContext } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = process.env.PEERTRAIN_CHROMIUM ?? '/usr/bin/chromium';

export async function launchBrowser(extraArgs: string[] = []): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), 'peertrain-chromium-'));
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic', ...extraArgs],
  });
}
