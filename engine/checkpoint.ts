/**
 * Checkpoint encoding (bytes only; writing files atomically is the entry point's job).
 *
 * Layout: "PTCKPT01" magic (8 bytes) | header length u32 LE | header JSON (UTF-8) | zero padding to 4 bytes |
 * payload: parameters, then AdamW first moments, then second moments, each float32 LE in manifest order.
 * The header holds the model and train configs, step, data position, tokenizer, manifest, payload length and
 * its CRC-32: a truncated or corrupted file is refused, never half-loaded.
 */
import { validateModelConfig, validateTrainConfig, type ModelConfig, type TrainConfig } from './config.ts';
import { crc32 } from './checksum.ts';
import { CheckpointError } from './errors.ts';
import { validateManifest, type Manifest } from './flat.ts';

const MAGIC = 'PTCKPT01';
/** A header larger than this is not ours (guards against allocating from a corrupt length field). */
const MAX_HEADER_BYTES = 64 << 20;

export interface CheckpointMeta {
  model: ModelConfig;
  train: TrainConfig;
  /** Optimizer steps completed. */
  step: number;
  /** Where the data stream stands (free-form, e.g. { tokensSeen }); opaque to the engine. */
  dataPosition: Record<string, unknown>;
  /** Tokenizer as JSON, so a checkpoint decodes its own samples. */
  tokenizer: unknown;
  /** Loss history for resumed curves: [step, trainLoss, valLoss?]. */
  history: Array<[number, number, number | null]>;
  /** Free-form run information (backend, wall time…). */
  info: Record<string, unknown>;
}

export interface Checkpoint extends CheckpointMeta {
  manifest: Manifest;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

interface Header extends CheckpointMeta {
  format: 1;
  manifest: Manifest;
  payloadBytes: number;
  payloadCrc32: number;
}

function littleEndianFloats(a: Float32Array): Uint8Array {
  // Float32Array uses the platform's byte order; every platform TF.js runs on is little-endian.
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function encodeCheckpoint(c: Checkpoint): Uint8Array {
  const n = c.manifest.totalSize;
  for (const [name, arr] of [['params', c.params], ['m', c.m], ['v', c.v]] as const) {
    if (arr.length !== n) throw new CheckpointError(`checkpoint ${name} has ${arr.length} values, manifest says ${n}`);
  }
  const payload = new Uint8Array(n * 12);
  payload.set(littleEndianFloats(c.params), 0);
  payload.set(littleEndianFloats(c.m), n * 4);
  payload.set(littleEndianFloats(c.v), n * 8);
  const header: Header = {
    format: 1,
    model: c.model,
    train: c.train,
    step: c.step,
    dataPosition: c.dataPosition,
    tokenizer: c.tokenizer,
    history: c.history,
    info: c.info,
    manifest: c.manifest,
    payloadBytes: payload.length,
    payloadCrc32: crc32(payload),
  };
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const pad = (4 - ((12 + headerBytes.length) % 4)) % 4;
  const out = new Uint8Array(12 + headerBytes.length + pad + payload.length);
  out.set(new TextEncoder().encode(MAGIC), 0);
  new DataView(out.buffer).setUint32(8, headerBytes.length, true);
  out.set(headerBytes, 12);
  out.set(payload, 12 + headerBytes.length + pad);
  return out;
}

/** Decodes and verifies a checkpoint; any inconsistency is a CheckpointError naming it. */
export function decodeCheckpoint(bytes: Uint8Array): Checkpoint {
  if (bytes.length < 12) throw new CheckpointError(`checkpoint is truncated (${bytes.length} bytes)`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== MAGIC) throw new CheckpointError('not a peertrain checkpoint (bad magic bytes)');
  const headerLen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
  if (headerLen > MAX_HEADER_BYTES || 12 + headerLen > bytes.length) throw new CheckpointError('checkpoint is truncated (header cut short)');
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(12, 12 + headerLen))) as Header;
  } catch {
    throw new CheckpointError('checkpoint header is corrupt (not valid JSON)');
  }
  if (typeof header !== 'object' || header === null || header.format !== 1) {
    throw new CheckpointError(`unsupported checkpoint format ${JSON.stringify((header as Header | null)?.format)}`);
  }
  let model: ModelConfig;
  let train: TrainConfig;
  let manifest: Manifest;
  try {
    model = validateModelConfig(header.model);
    train = validateTrainConfig(header.train, model);
    manifest = validateManifest(header.manifest);
  } catch (err) {
    throw new CheckpointError(`checkpoint header is invalid: ${(err as Error).message}`);
  }
  if (!Number.isInteger(header.step) || header.step < 0) throw new CheckpointError('checkpoint step is invalid');
  const start = 12 + headerLen + ((4 - ((12 + headerLen) % 4)) % 4);
  const n = manifest.totalSize;
  if (header.payloadBytes !== n * 12) throw new CheckpointError('checkpoint payload size does not match its manifest');
  if (bytes.length < start + header.payloadBytes) {
    throw new CheckpointError(`checkpoint is truncated: payload has ${Math.max(0, bytes.length - start)} of ${header.payloadBytes} bytes`);
  }
  if (bytes.length > start + header.payloadBytes) throw new CheckpointError('checkpoint has trailing bytes after its payload');
  // A copy: aligned for Float32Array, and detached from the file buffer (a Node Buffer's slice() is a view).
  const payload = new Uint8Array(header.payloadBytes);
  payload.set(bytes.subarray(start, start + header.payloadBytes));
  if (crc32(payload) !== header.payloadCrc32) throw new CheckpointError('checkpoint payload is corrupt (CRC-32 mismatch)');
  const floats = new Float32Array(payload.buffer);
  return {
    model,
    train,
    step: header.step,
    dataPosition: header.dataPosition ?? {},
    tokenizer: header.tokenizer,
    history: Array.isArray(header.history) ? header.history : [],
    info: header.info ?? {},
    manifest,
    params: floats.subarray(0, n),
    m: floats.subarray(n, 2 * n),
    v: floats.subarray(2 * n, 3 * n),
  };
}
