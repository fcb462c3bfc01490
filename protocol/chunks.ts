/**
 * How a flat array is cut for the wire: into `parts` contiguous chunks (one per all-reduce participant), and
 * each chunk into frames of at most MAX_PART_ELEMENTS. Pure arithmetic, so every peer cuts identically.
 */
import { MAX_PART_ELEMENTS } from './constants.ts';
import { ProtocolError } from './errors.ts';

function requireInt(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) throw new ProtocolError(`${name} must be an integer >= ${min}, got ${value}`);
}

/**
 * Bounds of chunk `index` when [0, total) is split into `parts` contiguous chunks whose sizes differ by at
 * most one: the first `total % parts` chunks are one element longer. Chunks may be empty when total < parts.
 */
export function chunkBounds(total: number, parts: number, index: number): { start: number; end: number } {
  requireInt('total', total, 0);
  requireInt('parts', parts, 1);
  requireInt('index', index, 0);
  if (index >= parts) throw new ProtocolError(`index must be below parts (${parts}), got ${index}`);
  const base = Math.floor(total / parts);
  const longer = total % parts;
  const start = index * base + Math.min(index, longer);
  return { start, end: start + base + (index < longer ? 1 : 0) };
}

/** Frames covering [start, end), each at most MAX_PART_ELEMENTS long; offsets are relative to `start`. */
export function partsOf(start: number, end: number): Array<{ offset: number; length: number }> {
  requireInt('start', start, 0);
  requireInt('end', end, start);
  const frames: Array<{ offset: number; length: number }> = [];
  const n = end - start;
  for (let offset = 0; offset < n; offset += MAX_PART_ELEMENTS) {
    frames.push({ offset, length: Math.min(MAX_PART_ELEMENTS, n - offset) });
  }
  return frames;
}
