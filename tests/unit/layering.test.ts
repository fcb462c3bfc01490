/**
 * The house rules, checked on the source: data flows one way (entry points → coordinator/peer → net/run →
 * engine/protocol; node/ and browser-client/ supply platform parts from the side), no circle between files,
 * only protocol/ imports msgpackr, and no `AbortSignal.timeout` inside an `AbortSignal.any` (Node can collect
 * such a timer before it fires; net/deadline.ts is the safe form).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** Which project folders each folder may import (besides itself). */
const ALLOWED: Record<string, string[]> = {
  protocol: [],
  engine: [],
  run: ['engine', 'protocol'],
  net: ['run', 'engine', 'protocol'],
  peer: ['net', 'run', 'engine', 'protocol'],
  coordinator: ['node', 'net', 'run', 'engine', 'protocol'],
  node: ['net', 'run', 'engine', 'protocol'],
  'browser-client': ['peer', 'net', 'run', 'engine', 'protocol'],
  cli: ['coordinator', 'peer', 'node', 'browser-client', 'net', 'run', 'engine', 'protocol'],
  harness: ['node', 'net', 'run', 'engine', 'protocol'],
  bench: ['cli', 'coordinator', 'peer', 'node', 'harness', 'net', 'run', 'engine', 'protocol'],
};

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

const files = Object.keys(ALLOWED).flatMap((d) => sources(join(root, d)));
const importRe = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*'([^']+)'|import\(\s*'([^']+)'\s*\)|(?:^|\n)\s*import\s*'([^']+)'/g;

function importsOf(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  return [...src.matchAll(importRe)].map((m) => m[1] ?? m[2] ?? m[3]);
}

const folderOf = (file: string) => relative(root, file).split('/')[0];

describe('the house', () => {
  it('no folder imports a folder above its own', () => {
    const bad: string[] = [];
    for (const f of files) {
      const from = folderOf(f);
      for (const spec of importsOf(f)) {
        if (!spec.startsWith('.')) continue;
        const to = folderOf(resolve(dirname(f), spec));
        if (to !== from && !ALLOWED[from].includes(to)) bad.push(`${relative(root, f)} → ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('no circle between files', () => {
    const graph = new Map<string, string[]>();
    for (const f of files) {
      graph.set(
        f,
        importsOf(f)
          .filter((s) => s.startsWith('.'))
          .map((s) => resolve(dirname(f), s)),
      );
    }
    const state = new Map<string, 'open' | 'done'>();
    const circles: string[] = [];
    const visit = (f: string, path: string[]) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        circles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(root, p)).join(' → '));
        return;
      }
      state.set(f, 'open');
      for (const g of graph.get(f) ?? []) visit(g, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    expect(circles).toEqual([]);
  });

  it('only protocol/ imports msgpackr', () => {
    const bad = files.filter((f) => folderOf(f) !== 'protocol' && importsOf(f).some((s) => s === 'msgpackr' || s.startsWith('msgpackr/')));
    expect(bad.map((f) => relative(root, f))).toEqual([]);
  });

  // gpt-tokenizer ships GPT-2's merges as plain data and JavaScript: platform-free, like the engine.
  const ENGINE_PACKAGES = ['@tensorflow/tfjs-core', 'gpt-tokenizer'];

  it('the engine imports only TensorFlow.js core (and platform-free data), protocol/ no TensorFlow.js at all', () => {
    const bad: string[] = [];
    for (const f of files) {
      const folder = folderOf(f);
      for (const s of importsOf(f)) {
        if (folder === 'protocol' && s.startsWith('@tensorflow/')) bad.push(`${relative(root, f)} → ${s}`);
        if (folder === 'engine' && !s.startsWith('.') && !ENGINE_PACKAGES.some((p) => s === p || s.startsWith(`${p}/`))) bad.push(`${relative(root, f)} → ${s}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('no AbortSignal.timeout inside an AbortSignal.any (comments aside)', () => {
    const bad: string[] = [];
    for (const f of files) {
      const code = readFileSync(f, 'utf8')
        .replace(/\/\*[\s\S]*?\*\//g, '')
        .replace(/\/\/.*$/gm, '');
      // Names bound to a timeout signal (`const t = AbortSignal.timeout(…)`) count as the timeout itself.
      const timeoutNames = [...code.matchAll(/(?:const|let|var)\s+(\w+)\s*=\s*AbortSignal\.timeout\(/g)].map((m) => m[1]);
      // Every AbortSignal.any( … ) call, with its balanced parentheses.
      for (let i = code.indexOf('AbortSignal.any('); i >= 0; i = code.indexOf('AbortSignal.any(', i + 1)) {
        let depth = 0;
        let j = i + 'AbortSignal.any'.length;
        for (; j < code.length; j++) {
          if (code[j] === '(') depth++;
          else if (code[j] === ')' && --depth === 0) break;
        }
        const args = code.slice(i, j);
        if (args.includes('AbortSignal.timeout') || timeoutNames.some((n) => new RegExp(`\\b${n}\\b`).test(args))) bad.push(relative(root, f));
      }
    }
    expect(bad).toEqual([]);
  });
});
