/**
 * Errors of the protocol layer. Decoding never throws (hostile bytes give a reject reason, see validate.ts);
 * these are for our own misuse: encoding a message no peer could accept, or asking for impossible chunking.
 * Each has a stable `name`: errors cross worker and bundle boundaries, where `instanceof` fails.
 */
import type { RejectReason } from './validate.ts';

/** Thrown when encoding a message that receivers would refuse (bad structure, too large) or on invalid chunk arguments. */
export class ProtocolError extends Error {
  override name = 'ProtocolError' as const;
  constructor(
    message: string,
    /** The reject reason a receiver would have given, when the error is about a message. */
    readonly reason?: RejectReason,
  ) {
    super(message);
  }
}
