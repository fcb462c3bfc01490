/**
 * The coordinator's voice: announcements, commits and resync requests, published on the control topic in the
 * run's envelope. Gossip promises no delivery, so a failed publish is logged and the caller repeats what
 * matters (announcements are re-published until the round completes).
 */
import { encodeMessage, envelope, TOPIC_CONTROL, type Message, type RunScope } from '../protocol/index.ts';
import type { Clock, Logger } from '../net/types.ts';
import type { PubSubLike } from '../net/types.ts';

export class ControlChannel {
  constructor(
    private readonly pubsub: PubSubLike,
    readonly scope: RunScope,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** The envelope of a message sent now. */
  envelope() {
    return envelope(this.scope, this.clock.now());
  }

  async publish(msg: Message): Promise<void> {
    try {
      await this.pubsub.publish(TOPIC_CONTROL, encodeMessage(msg));
    } catch (err) {
      this.log.debug(`publish failed: ${(err as Error).message}`);
    }
  }

  /** Asks `peer` to fetch the state again. */
  resync(peer: string, reason: string): void {
    this.log.warn(`peer ${peer.slice(-8)} out of sync (${reason}): asking it to resync`);
    void this.publish({ ...this.envelope(), type: 'resync', target: peer, reason });
  }
}
