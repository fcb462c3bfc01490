/**
 * Who is in the run: admission (join token, bans, what the round driver refuses), the member list with each
 * peer's speed, memory and sync state, silence (a peer unheard for too long leaves), rejected messages and
 * bans. It knows nothing of rounds: it tells the coordinator when a member is lost, and the coordinator decides
 * what that means for the round in flight.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Connection, Stream } from '@libp2p/interface';
import { envelope, JOIN_PROTOCOL, PROTOCOL_VERSION, type JoinRequest, type RejectReason } from '../protocol/index.ts';
import { framed } from '../net/framed.ts';
import type { Clock, Libp2pLike, Logger } from '../net/types.ts';
import type { RunConfig } from '../run/config.ts';
import { assignShards } from '../run/shares.ts';
import type { RunInfo } from './run-dir.ts';
import type { RunStore } from './run-store.ts';

/** A peer that sends this many rejected messages is banned from the run. */
export const BAN_AFTER_REJECTIONS = 20;
/** A peer not heard from for this long (and not connected) leaves the member list. */
export const SILENCE_MS = 15_000;
/** How long a join handshake may take before its stream is dropped. */
const JOIN_TIMEOUT_MS = 10_000;
/** Concurrent join handshakes accepted. */
const MAX_JOIN_STREAMS = 64;

export interface Member {
  id: string;
  slot: number;
  kind: 'node' | 'browser';
  backend: string;
  tokensPerSec: number;
  lastSeen: number;
  /** The round this peer's state is known to match; it may participate only in that round. */
  syncedRound: number;
  rejections: number;
  /** Memory it offers for the model (MiB), for the pipeline planner. */
  memoryMB: number;
  /** Pipeline runs: the model parts whose state it was last given. */
  holds?: { from: number; to: number };
}

export interface MembershipDeps {
  libp2p: Libp2pLike;
  store: RunStore;
  info: RunInfo;
  configHash: string;
  config: RunConfig;
  log: Logger;
  clock: Clock;
  /** Receives 'peer:joined' and 'peer:left' (detail: peer id). */
  events: EventTarget;
  /** Why the round driver cannot use a peer with this join request (its join is refused), or undefined. */
  admissionRefusal(join: JoinRequest): string | undefined;
  /** A member can no longer take part in what is in flight (it left, disconnected, was banned). */
  onLost(peer: string, why: string): void;
  /** The round about to start (told to a newcomer in its welcome). */
  currentRound(): number;
  /** A peer was admitted: a loop waiting for peers may go on. */
  onAdmitted(peer: string): void;
}

export class Membership {
  private readonly members = new Map<string, Member>();
  private readonly me: string;
  private readonly onDisconnect = (evt: Event) => this.disconnected((evt as CustomEvent<{ toString(): string }>).detail.toString());

  constructor(private readonly d: MembershipDeps) {
    this.me = d.libp2p.peerId.toString();
  }

  async start(): Promise<void> {
    await this.d.libp2p.handle(JOIN_PROTOCOL, (s, c) => this.onJoin(s, c), { maxInboundStreams: MAX_JOIN_STREAMS });
    this.d.libp2p.addEventListener('peer:disconnect', this.onDisconnect);
  }

  async stop(): Promise<void> {
    this.d.libp2p.removeEventListener('peer:disconnect', this.onDisconnect);
    await this.d.libp2p.unhandle(JOIN_PROTOCOL).catch(() => {});
  }

  get size(): number {
    return this.members.size;
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  has(id: string): boolean {
    return this.members.has(id);
  }

  ids(): IterableIterator<string> {
    return this.members.keys();
  }

  all(): Member[] {
    return [...this.members.values()];
  }

  values(): IterableIterator<Member> {
    return this.members.values();
  }

  isConnected(peer: string): boolean {
    return this.d.libp2p.getConnections().some((c) => c.remotePeer.toString() === peer && c.status === 'open');
  }

  /** Marks `peer` as needing the state again before it takes part. */
  unsync(peer: string): void {
    const m = this.members.get(peer);
    if (m) m.syncedRound = -1;
  }

  /** A message from `peer` arrived: it is alive. */
  heard(peer: string): Member | undefined {
    const m = this.members.get(peer);
    if (m) m.lastSeen = this.d.clock.now();
    return m;
  }

  /** The member said it leaves. */
  left(peer: string): void {
    if (!this.members.delete(peer)) return;
    this.d.events.dispatchEvent(new CustomEvent('peer:left', { detail: peer }));
    this.d.onLost(peer, 'left');
  }

  /** Drops members that are neither connected nor heard from for SILENCE_MS. */
  dropSilent(): void {
    const now = this.d.clock.now();
    for (const m of [...this.members.values()]) {
      if (this.isConnected(m.id) || now - m.lastSeen <= SILENCE_MS) continue;
      this.members.delete(m.id);
      this.d.log.info(`peer ${m.id.slice(-8)} dropped (silent for ${((now - m.lastSeen) / 1000).toFixed(0)} s)`);
      this.d.events.dispatchEvent(new CustomEvent('peer:left', { detail: m.id }));
    }
  }

  /** Connected members whose state matches `round`, in slot order (after dropping the silent ones). */
  ready(round: number): Member[] {
    this.dropSilent();
    return this.all()
      .filter((m) => m.syncedRound === round && this.isConnected(m.id))
      .sort((a, b) => a.slot - b.slot);
  }

  /** Counts a rejected message; a member with BAN_AFTER_REJECTIONS of them is banned and disconnected. */
  reject(reason: RejectReason | string, from: string, detail: string): void {
    this.d.store.countRejection(reason);
    this.d.log.debug(`rejected ${reason} from ${from.slice(-8)}: ${detail}`);
    const m = this.members.get(from);
    if (!m) return;
    m.rejections++;
    if (m.rejections < BAN_AFTER_REJECTIONS) return;
    this.d.log.warn(`banning ${from.slice(-8)} after ${m.rejections} rejected messages`);
    this.d.store.banPeer(from);
    this.members.delete(from);
    this.d.onLost(from, 'was banned');
    for (const c of this.d.libp2p.getConnections()) if (c.remotePeer.toString() === from) void c.close().catch(() => {});
  }

  private disconnected(peer: string): void {
    // Closing a connection does not end membership (it may reconnect), but it cannot finish what is in flight.
    if (this.members.has(peer)) this.d.onLost(peer, 'disconnected');
  }

  private async onJoin(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    const io = framed(stream, () => ({ from }), AbortSignal.timeout(JOIN_TIMEOUT_MS));
    try {
      const r = await io.read();
      if (!r) return;
      const refuse = async (reason: string) => {
        await io.write({ v: PROTOCOL_VERSION, type: 'refused', reason });
        await io.close();
      };
      if (!r.ok || r.msg.type !== 'join') {
        this.reject(r.ok ? 'structure' : r.reason, from, r.ok ? `expected join, got ${r.msg.type}` : r.detail);
        return await refuse('malformed join request');
      }
      const join = r.msg;
      const row = this.d.store.peer(from);
      if (row?.banned) return await refuse('banned from this run');
      const a = Buffer.from(join.token);
      const b = Buffer.from(this.d.info.token);
      if (a.length !== b.length || !timingSafeEqual(a, b)) {
        this.d.store.countRejection('token');
        this.d.log.warn(`refused ${from}: wrong join token`);
        return await refuse('wrong join token');
      }
      const refusal = this.d.admissionRefusal(join);
      if (refusal) {
        this.d.log.warn(`refused ${from.slice(-8)}: ${refusal}`);
        return await refuse(refusal);
      }
      const now = this.d.clock.now();
      const slot = row?.slot ?? this.d.store.nextSlot();
      this.d.store.upsertPeer({ id: from, kind: join.kind, backend: join.backend, tokensPerSec: join.tokensPerSec, slot, joinedAt: row?.joinedAt ?? now, lastSeen: now });
      const others = this.all()
        .filter((m) => m.id !== from)
        .map((m) => m.tokensPerSec);
      const shards = assignShards(this.d.config.data.shards.filter((x) => x.split === 'train'), slot, join.tokensPerSec, others);
      this.d.store.setShards(from, shards);
      // A rejoin keeps its rejection count: no dodging a ban by rejoining.
      const before = this.members.get(from);
      this.members.set(from, { id: from, slot, kind: join.kind, backend: join.backend, tokensPerSec: join.tokensPerSec, lastSeen: now, syncedRound: -1, rejections: before?.rejections ?? 0, memoryMB: join.memoryMB });
      const scope = { runId: this.d.info.runId, configHash: this.d.configHash, sender: this.me };
      await io.write({ ...envelope(scope, now), type: 'welcome', config: this.d.config as unknown as Record<string, unknown>, round: this.d.currentRound(), slot, shards });
      await io.close();
      this.d.log.info(`peer ${from.slice(-8)} joined (slot ${slot}, ${join.kind}, ${join.backend}, ${join.tokensPerSec.toFixed(0)} tok/s, ${shards.length} shard(s))`);
      this.d.events.dispatchEvent(new CustomEvent('peer:joined', { detail: from }));
      this.d.onAdmitted(from);
    } catch (err) {
      io.abort(err as Error);
    }
  }
}
