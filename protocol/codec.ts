/**
 * The one msgpack codec of the project: the only place that imports msgpackr, configured once, deliberately.
 * Encoding is for our own messages and throws on misuse; decoding is for anyone's bytes and never throws.
 */
import { Packr } from 'msgpackr';
import { MAX_MESSAGE_BYTES } from './constants.ts';
import { ProtocolError } from './errors.ts';
import type { Message } from './messages.ts';
import { structureProblem, validateMessage, type DecodeResult, type ValidationContext } from './validate.ts';

/**
 * - useRecords: false — records (and bundled strings) make a message depend on definitions sent in earlier
 *   messages, and gossip promises neither delivery nor order: every message must decode on its own.
 * - moreTypes: true — Float32Array travels as a typed-array extension (raw little-endian bytes) and decodes
 *   as a Float32Array, not as a list of doubles.
 * - mapsAsObjects: true — maps decode to plain objects, which validation expects.
 * - structuredClone: false — refuse the id/pointer extensions, so hostile bytes cannot build cyclic or
 *   shared-reference values (whose traversal could loop or blow up). Our encoder never emits them.
 */
const packr = new Packr({ moreTypes: true, useRecords: false, mapsAsObjects: true, bundleStrings: false, structuredClone: false });

/**
 * Encodes a message. Throws ProtocolError when no receiver could accept it: not a well-formed message
 * (reason 'malformed' or 'structure') or larger than MAX_MESSAGE_BYTES ('size'). It deliberately does not
 * refuse what only a receiver can judge (version, run, sender, round, non-finite values, norm), so tests can
 * inject exactly those faults through the real codec. Callers publishing on gossip also compare the length
 * with GOSSIP_MAX_BYTES.
 */
export function encodeMessage(msg: Message): Uint8Array {
  const problem = structureProblem(msg);
  if (problem) throw new ProtocolError(`cannot encode message: ${problem.detail}`, problem.reason);
  let packed: Uint8Array;
  try {
    packed = packr.pack(msg);
  } catch (err) {
    throw new ProtocolError(`cannot encode ${msg.type} message: ${err instanceof Error ? err.message : String(err)}`, 'malformed');
  }
  if (packed.byteLength > MAX_MESSAGE_BYTES) {
    throw new ProtocolError(`${msg.type} message is ${packed.byteLength} bytes, over the ${MAX_MESSAGE_BYTES}-byte limit`, 'size');
  }
  // A copy, as a plain Uint8Array on every platform: msgpackr returns a view of a buffer it reuses, and our
  // callers queue frames on streams, where a later encode must not overwrite an earlier frame.
  return Uint8Array.prototype.slice.call(packed);
}

/**
 * Decodes and validates bytes from the network (size → malformed → structure → version → run → sender →
 * round → nonfinite → norm; see validate.ts). Never throws, whatever the bytes. A part's `values` is a
 * fresh Float32Array that owns its (aligned) buffer, so it can be kept, transferred or mutated freely.
 */
export function decodeMessage(bytes: Uint8Array, ctx: ValidationContext): DecodeResult {
  if (!(bytes instanceof Uint8Array)) return { ok: false, reason: 'malformed', detail: 'not a byte array' };
  const maxBytes = ctx.maxBytes ?? MAX_MESSAGE_BYTES;
  if (bytes.byteLength > maxBytes) return { ok: false, reason: 'size', detail: `${bytes.byteLength} bytes, over the ${maxBytes}-byte limit` };
  let obj: unknown;
  try {
    obj = packr.unpack(bytes);
  } catch (err) {
    return { ok: false, reason: 'malformed', detail: `undecodable: ${String(err instanceof Error ? err.message : err).slice(0, 80)}` };
  }
  const result = validateMessage(obj, ctx);
  if (result.ok && result.msg.type === 'part') {
    const values = result.msg.values;
    // msgpackr copies typed arrays today; copying again if that ever changes keeps the promise above.
    if (values.byteOffset !== 0 || values.buffer.byteLength !== values.byteLength) result.msg.values = values.slice();
  }
  if (result.ok && result.msg.type === 'act-part') {
    const values = result.msg.values;
    if (values.byteOffset !== 0 || values.buffer.byteLength !== values.byteLength) result.msg.values = values.slice();
  }
  // msgpack `bin` decodes to a Node Buffer in Node: hand out a plain Uint8Array everywhere.
  if (result.ok && result.msg.type === 'data') result.msg.bytes = Uint8Array.prototype.slice.call(result.msg.bytes);
  return result;
}
