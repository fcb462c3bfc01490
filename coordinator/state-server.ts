/**
 * Hands the run's state and data to peers. Data shards are served at any time; state only between rounds:
 * a request waits in a queue until the round loop calls serveQueued() at a round boundary, so the peer then
 * holds exactly the state of the round about to start. What state a peer gets (the whole model, or its
 * pipeline stage) is the round driver's business: it is passed in as `provide`.
 */
import { serveData, type ShardSource } from '../net/data-sync.ts';
import { serveState, type RunState } from '../net/state-sync.ts';
import type { Libp2pLike, Logger } from '../net/types.ts';
import { DATA_PROTOCOL, STATE_PROTOCOL, type RejectReason } from '../protocol/index.ts';

export interface StateServerDeps {
  libp2p: Libp2pLike;
  runId: string;
  configHash: string;
  data: ShardSource;
  isMember(peer: string): boolean;
  reject(reason: RejectReason | string, from: string, detail: string): void;
  log: Logger;
  /** A member asked for the state (it cannot finish anything in flight meanwhile). */
  onRequest(peer: string): void;
}

interface Queued {
  peer: string;
  resolve: (s: RunState) => void;
  reject: (e: Error) => void;
}

export class StateServer {
  private readonly queue: Queued[] = [];

  constructor(private readonly d: StateServerDeps) {}

  async start(): Promise<void> {
    const ids = { runId: this.d.runId, configHash: this.d.configHash };
    await serveState(this.d.libp2p, ids, (p) => this.d.isMember(p), (p) => this.enqueue(p), (r, f, x) => this.d.reject(r, f, x));
    await serveData(this.d.libp2p, ids, this.d.data, (p) => this.d.isMember(p), (r, f, x) => this.d.reject(r, f, x));
  }

  async stop(): Promise<void> {
    for (const q of this.queue.splice(0)) q.reject(new Error('coordinator stopping'));
    await this.d.libp2p.unhandle(STATE_PROTOCOL).catch(() => {});
    await this.d.libp2p.unhandle(DATA_PROTOCOL).catch(() => {});
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Whether `peer` asked for the state and waits for the next round boundary to get it. */
  awaiting(peer: string): boolean {
    return this.queue.some((q) => q.peer === peer);
  }

  private enqueue(peer: string): Promise<RunState> {
    return new Promise((resolve, reject) => {
      this.queue.push({ peer, resolve, reject });
      this.d.onRequest(peer);
    });
  }

  /**
   * Serves every queued request with `provide(peer)` (called between rounds); `served(peer)` marks the peer as
   * in sync with the round about to start. A request `provide` cannot serve fails with its reason.
   */
  async serveQueued(provide: (peer: string) => Promise<RunState>, served: (peer: string) => void): Promise<void> {
    for (const q of this.queue.splice(0)) {
      try {
        const state = await provide(q.peer);
        served(q.peer);
        q.resolve(state);
      } catch (err) {
        this.d.log.warn((err as Error).message);
        q.reject(err as Error);
      }
    }
  }
}
