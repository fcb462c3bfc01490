/**
 * Data shards over a direct stream: the coordinator serves the shards of its prepared data folder; a peer
 * fetches the ones it is assigned and checks each against the sha256 in the run's manifest before training
 * on a byte of it.
 *   request  → DataRequest { file }
 *   response ← DataPart frames { file, offset, total, bytes } covering the file in order
 */
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { DataManifest } from '../engine/data/manifest.ts';
import { DATA_PROTOCOL, envelope, MAX_DATA_BYTES, type RejectReason, type ValidationContext } from '../protocol/index.ts';
import { framed } from './framed.ts';
import type { Libp2pLike } from './types.ts';

/** How long serving one shard may take. */
const SERVE_TIMEOUT_MS = 300_000;

/** Thrown when a shard cannot be fetched or does not match its hash. */
export class DataSyncError extends Error {
  override name = 'DataSyncError' as const;
}

interface RunIds {
  runId: string;
  configHash: string;
}

/** Where the served shards come from (a prepared folder). */
export interface ShardSource {
  manifest: DataManifest;
  readShard(file: string): Promise<Uint8Array>;
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

export async function serveData(
  libp2p: Libp2pLike,
  ids: RunIds,
  source: ShardSource,
  isAdmitted: (peer: string) => boolean,
  onReject: (reason: RejectReason | 'unknown-shard', from: string, detail: string) => void,
): Promise<void> {
  const me = libp2p.peerId.toString();
  const known = new Set(source.manifest.shards.map((s) => s.file));
  await libp2p.handle(DATA_PROTOCOL, async (stream: Stream, connection: Connection) => {
    const from = connection.remotePeer.toString();
    const io = framed(stream, (): ValidationContext => ({ ...ids, from, isAdmitted }), AbortSignal.timeout(SERVE_TIMEOUT_MS));
    try {
      const req = await io.read();
      if (!req) return;
      if (!req.ok || req.msg.type !== 'data-request') {
        onReject(req.ok ? 'structure' : req.reason, from, req.ok ? `expected a data request, got ${req.msg.type}` : req.detail);
        io.abort(new Error('bad data request'));
        return;
      }
      const file = req.msg.file;
      if (!known.has(file)) {
        onReject('unknown-shard', from, `no shard ${file}`);
        io.abort(new Error('unknown shard'));
        return;
      }
      const bytes = await source.readShard(file);
      for (let offset = 0; offset < bytes.length; offset += MAX_DATA_BYTES) {
        const chunk = bytes.subarray(offset, Math.min(bytes.length, offset + MAX_DATA_BYTES));
        await io.write({ ...envelope({ ...ids, sender: me }, Date.now()), type: 'data', file, offset, total: bytes.length, bytes: chunk });
      }
      await io.close();
    } catch (err) {
      io.abort(err as Error);
    }
  }, { maxInboundStreams: 64 });
}

/** Fetches one shard from `from` and verifies its size and sha256 against the manifest. */
export async function fetchShard(libp2p: Libp2pLike, ids: RunIds, from: string, manifest: DataManifest, file: string, signal: AbortSignal): Promise<Uint8Array> {
  const entry = manifest.shards.find((s) => s.file === file);
  if (!entry) throw new DataSyncError(`shard ${file} is not in the run's manifest`);
  const stream = await libp2p.dialProtocol(peerIdFromString(from), DATA_PROTOCOL, { signal });
  const io = framed(stream, (): ValidationContext => ({ ...ids, from }), signal);
  try {
    await io.write({ ...envelope({ ...ids, sender: libp2p.peerId.toString() }, Date.now()), type: 'data-request', file });
    const out = new Uint8Array(entry.bytes);
    let filled = 0;
    while (filled < entry.bytes) {
      const r = await io.read();
      if (!r) throw new DataSyncError(`shard ${file}: stream ended after ${filled} of ${entry.bytes} bytes`);
      if (!r.ok) throw new DataSyncError(`shard ${file}: ${r.reason}: ${r.detail}`);
      const p = r.msg;
      if (p.type !== 'data' || p.file !== file || p.total !== entry.bytes || p.offset !== filled) throw new DataSyncError(`shard ${file}: unexpected frame`);
      out.set(p.bytes, p.offset);
      filled += p.bytes.length;
    }
    await io.close();
    const sha = await sha256Hex(out);
    if (sha !== entry.sha256) throw new DataSyncError(`shard ${file} from ${from} does not match its sha256 in the manifest`);
    return out;
  } catch (err) {
    io.abort(err as Error);
    throw err;
  }
}
