/**
 * Flat form of named tensors: one Float32Array plus a manifest of names, shapes and offsets. Parameters,
 * gradients and optimizer state cross the network and go to disk in this form.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ManifestError } from './errors.ts';

export interface ManifestEntry {
  name: string;
  shape: number[];
  dtype: 'float32';
  /** Offset in elements into the flat array. */
  offset: number;
  /** Number of elements. */
  size: number;
}

export interface Manifest {
  entries: ManifestEntry[];
  /** Total number of elements. */
  totalSize: number;
}

export function buildManifest(specs: Array<{ name: string; shape: number[] }>): Manifest {
  const entries: ManifestEntry[] = [];
  let offset = 0;
  const seen = new Set<string>();
  for (const s of specs) {
    if (seen.has(s.name)) throw new ManifestError(`duplicate name "${s.name}" in manifest`);
    seen.add(s.name);
    const size = s.shape.reduce((a, b) => a * b, 1);
    entries.push({ name: s.name, shape: [...s.shape], dtype: 'float32', offset, size });
    offset += size;
  }
  return { entries, totalSize: offset };
}

/** Checks a manifest that came from outside (a file, a peer): shapes, offsets and sizes must be consistent. */
export function validateManifest(raw: unknown): Manifest {
  if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as Manifest).entries)) {
    throw new ManifestError('manifest must be an object with an entries array');
  }
  const specs = (raw as Manifest).entries.map((e, i) => {
    if (typeof e !== 'object' || e === null || typeof e.name !== 'string') throw new ManifestError(`manifest entry ${i} has no name`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0 && d < 2 ** 31)) {
      throw new ManifestError(`manifest entry "${e.name}" has an invalid shape`);
    }
    if (e.dtype !== 'float32') throw new ManifestError(`manifest entry "${e.name}" has unsupported dtype ${JSON.stringify(e.dtype)}`);
    return { name: e.name, shape: e.shape };
  });
  const rebuilt = buildManifest(specs);
  const claimed = (raw as Manifest).totalSize;
  if (claimed !== rebuilt.totalSize) throw new ManifestError(`manifest totalSize ${claimed} does not match its entries (${rebuilt.totalSize})`);
  rebuilt.entries.forEach((e, i) => {
    const r = (raw as Manifest).entries[i];
    if (r.offset !== e.offset || r.size !== e.size) throw new ManifestError(`manifest entry "${e.name}" has inconsistent offset or size`);
  });
  return rebuilt;
}

/**
 * Copies named tensors into one flat array in manifest order. Reads are asynchronous: GPU backends (WebGPU in
 * Node, WebGL/WebGPU in browsers) cannot or should not read synchronously.
 */
export async function flattenTensors(tensors: Record<string, tf.Tensor>, manifest: Manifest): Promise<Float32Array> {
  const out = new Float32Array(manifest.totalSize);
  for (const e of manifest.entries) {
    const t = tensors[e.name];
    if (!t) throw new ManifestError(`tensor "${e.name}" is missing`);
    if (t.size !== e.size) throw new ManifestError(`tensor "${e.name}" has ${t.size} elements, manifest says ${e.size}`);
    out.set((await t.data()) as Float32Array, e.offset);
  }
  return out;
}

/** Views of the flat array per name (no copy). */
export function sliceFlat(flat: Float32Array, manifest: Manifest): Map<string, Float32Array> {
  if (flat.length !== manifest.totalSize) {
    throw new ManifestError(`flat array has ${flat.length} elements, manifest says ${manifest.totalSize}`);
  }
  const out = new Map<string, Float32Array>();
  for (const e of manifest.entries) out.set(e.name, flat.subarray(e.offset, e.offset + e.size));
  return out;
}

/** New tensors from a flat array; the caller owns them. */
export function unflattenToTensors(flat: Float32Array, manifest: Manifest): Record<string, tf.Tensor> {
  const views = sliceFlat(flat, manifest);
  const out: Record<string, tf.Tensor> = {};
  for (const e of manifest.entries) out[e.name] = tf.tensor(views.get(e.name)!, e.shape, 'float32');
  return out;
}
