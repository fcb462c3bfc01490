/**
 * peertrain's wire protocol: the one definition of every message and stream between peers — message types,
 * the single msgpackr codec, validation, limits and versions. It imports no TensorFlow.js and nothing
 * Node-only (it runs in browser tabs too): tensors cross it as Float32Array.
 *
 * Decoding hostile bytes returns a value, never throws, and checks in order
 * size → malformed → structure → version → run → sender → unadmitted → stale/future → nonfinite → norm;
 * the reason feeds peer scoring and metrics.
 *
 * Example:
 *
 *   import { encodeMessage, decodeMessage, chunkBounds, partsOf, PROTOCOL_VERSION } from './protocol/index.ts';
 *   const { start, end } = chunkBounds(grads.length, participants.length, myIndex);
 *   for (const { offset, length } of partsOf(start, end)) {
 *     const bytes = encodeMessage({
 *       v: PROTOCOL_VERSION, type: 'part', runId, configHash, sender: myPeerId, ts: Date.now(),
 *       round, attempt: 0, phase: 'reduce', chunk: myIndex, offset, total: end - start, weight: samples,
 *       values: grads.subarray(start + offset, start + offset + length),
 *     });
 *     // ...write bytes as one length-prefixed frame on the ALLREDUCE_PROTOCOL stream
 *   }
 *   // receiver, for each frame:
 *   const res = decodeMessage(frame, { runId, configHash, from: remotePeerId, isAdmitted, currentRound: round });
 *   if (!res.ok) scorePeer(remotePeerId, res.reason);
 *   else if (res.msg.type === 'part') accumulate(res.msg);
 */
export * from './constants.ts';
export * from './errors.ts';
export * from './messages.ts';
export { REJECT_REASONS, validateMessage, type DecodeResult, type RejectReason, type ValidationContext } from './validate.ts';
export { encodeMessage, decodeMessage } from './codec.ts';
export { chunkBounds, partsOf } from './chunks.ts';
export { toFloat16, fromFloat16, float16Finite } from './float16.ts';
export { envelope, type Envelope, type RunScope } from './envelope.ts';
