/**
 * The stage PeerMode: a pipeline peer serves one stage of the model (stage-peer.ts); this adapts it to the
 * runtime — its announcements and commits come from the control topic, its failures go to the coordinator as
 * pipe-error reports, its state comes from the coordinator's stage slice.
 */
import type { RunState } from '../../net/state-sync.ts';
import type { Message } from '../../protocol/index.ts';
import type { PeerMode, PeerModeContext } from '../peer-mode.ts';
import { StagePeer, type StageProgress } from './stage-peer.ts';

/** Longest failure reason a pipe-error carries. */
const MAX_REASON_CHARS = 500;

export class StageMode implements PeerMode {
  private readonly peer: StagePeer;

  constructor(c: PeerModeContext, onProgress?: (p: StageProgress) => void) {
    this.peer = new StagePeer({
      libp2p: c.libp2p,
      runId: c.runId,
      configHash: c.configHash,
      config: c.config,
      coordinator: () => c.coordinator(),
      isAdmitted: (p) => c.isAdmitted(p),
      batchAt: (round, k) => c.batchAt(round, 0, k),
      publish: (m) => c.publish(m),
      resync: (why) => c.requestSync(why),
      reportFailure: (a, failed, reason) => void c.publish({ ...c.envelope(), type: 'pipe-error', round: a.round, attempt: a.attempt, micro: 0, failed, reason: reason.slice(0, MAX_REASON_CHARS) }),
      averaging: (size, round, protocol) => c.averaging(size, round, protocol),
      onReject: (reason, from, detail) => c.log.debug(`rejected ${reason} from ${from.slice(-8)}: ${detail}`),
      log: c.log,
      onProgress: (p) => {
        c.contributed(0);
        onProgress?.(p);
      },
    });
  }

  get round(): number {
    return this.peer.round;
  }

  get speed(): number {
    return this.peer.tokensPerSec;
  }

  start(): Promise<void> {
    return this.peer.start();
  }

  stop(): Promise<void> {
    return this.peer.stop();
  }

  reset(): void {
    // Attempts are keyed by the coordinator's attempt numbers, which never repeat across its restarts: an
    // attempt in flight fails on its own deadline or is superseded by the next announcement.
  }

  async adopt(s: RunState): Promise<void> {
    this.peer.adopt(s);
  }

  onControl(msg: Message): void {
    if (msg.type === 'pipe-round') this.peer.onAnnounce(msg);
    else if (msg.type === 'pipe-commit') this.peer.onCommit(msg);
  }
}

export type { StageProgress };
