/**
 * Joining a run: the handshake with the coordinator (join token, kind, backend, speed, memory offered), the
 * checks on its welcome (a config that validates and matches its hash, the same run as before on a rejoin),
 * and the training data the welcome assigns — every shard fetched and verified against the run's manifest.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import type { Multiaddr } from '@multiformats/multiaddr';
import { packedSequences, type PackedSequences } from '../engine/data/batches.ts';
import { decodeShard } from '../engine/data/shards.ts';
import { fetchShard } from '../net/data-sync.ts';
import { framed } from '../net/framed.ts';
import type { Libp2pLike, Logger } from '../net/types.ts';
import { JOIN_PROTOCOL, PROTOCOL_VERSION, type PeerKind } from '../protocol/index.ts';
import { configHash, validateRunConfig, type RunConfig } from '../run/config.ts';

/** Memory a peer offers the pipeline planner when it says nothing (MiB). */
export const DEFAULT_MEMORY_MB = 4096;

/** Thrown when the coordinator refuses us or its welcome is unusable. */
export class JoinRefusedError extends Error {
  override name = 'JoinRefusedError' as const;
}

export interface JoinRequestOptions {
  token: string;
  kind: PeerKind;
  backend: string;
  tokensPerSec: number;
  memoryMB?: number;
}

export interface Welcomed {
  coordinator: string;
  config: RunConfig;
  runId: string;
  configHash: string;
  slot: number;
  shards: string[];
}

type DialingLibp2p = Libp2pLike & { dial(addr: Multiaddr | Multiaddr[], o?: { signal?: AbortSignal }): Promise<unknown> };

/** Dials the coordinator, presents the join request and returns its checked welcome. */
export async function joinRun(libp2p: DialingLibp2p, coordinatorAddrs: Multiaddr[], req: JoinRequestOptions, signal: AbortSignal): Promise<Welcomed> {
  const conn = (await libp2p.dial(coordinatorAddrs, { signal })) as { remotePeer: { toString(): string } };
  const coordinator = conn.remotePeer.toString();
  const stream = await libp2p.dialProtocol(peerIdFromString(coordinator), JOIN_PROTOCOL, { signal });
  const io = framed(stream, () => ({ from: coordinator }), signal);
  await io.write({ v: PROTOCOL_VERSION, type: 'join', token: req.token, kind: req.kind, backend: req.backend, tokensPerSec: req.tokensPerSec, memoryMB: req.memoryMB ?? DEFAULT_MEMORY_MB, sender: libp2p.peerId.toString() });
  const r = await io.read();
  await io.close().catch(() => {});
  if (!r) throw new JoinRefusedError('the coordinator closed the join stream without an answer');
  if (!r.ok) throw new JoinRefusedError(`the coordinator's answer was rejected (${r.reason}: ${r.detail})`);
  if (r.msg.type === 'refused') throw new JoinRefusedError(`the coordinator refused to admit us: ${r.msg.reason}`);
  if (r.msg.type !== 'welcome') throw new JoinRefusedError(`expected a welcome, got ${r.msg.type}`);
  const welcome = r.msg;
  const config = validateRunConfig(welcome.config);
  const hash = await configHash(config);
  if (hash !== welcome.configHash) throw new JoinRefusedError(`the welcome's config does not match its hash ${welcome.configHash}`);
  return { coordinator, config, runId: welcome.runId, configHash: hash, slot: welcome.slot, shards: welcome.shards };
}

/** Fetches and verifies the training shards assigned to us, packed into sequences. */
export async function fetchTrainingData(libp2p: Libp2pLike, w: Welcomed, signal: AbortSignal, log: Logger): Promise<PackedSequences> {
  const m = w.config.data;
  const ids = { runId: w.runId, configHash: w.configHash };
  const parts: Int32Array[] = [];
  for (const s of m.shards.filter((x) => x.split === 'train' && w.shards.includes(x.file))) {
    const bytes = await fetchShard(libp2p, ids, w.coordinator, m, s.file, signal);
    parts.push(decodeShard(bytes, m, s.file));
  }
  const data = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.length;
  }
  log.info(`verified ${parts.length} shard(s): ${data.length.toLocaleString('en-US')} tokens`);
  return packedSequences(data, m.sequenceLength);
}
