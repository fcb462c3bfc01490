/**
 * A micro-batch's tensor on the pipeline stream: one `activation` header, then `act-part` frames of at most
 * MAX_PART_ELEMENTS values, as float32 or as float16 bit patterns (half the bytes; the loss impact is measured
 * in the bench). Reading checks every frame against the header, so a peer cannot make us allocate more than
 * the header's B·T·C or write outside it.
 */
import { envelope, fromFloat16, MAX_ACTIVATION_ABS, partsOf, toFloat16, type ActivationHeader, type RunScope } from '../../protocol/index.ts';
import type { FramedStream } from '../../net/framed.ts';

/** Thrown when a pipeline peer's frames do not make a well-formed tensor (or it answers with an error). */
export class PipelineStreamError extends Error {
  override name = 'PipelineStreamError' as const;
  constructor(
    message: string,
    /** The peer that failed, when known ('' otherwise). */
    readonly failed = '',
  ) {
    super(message);
  }
}

export type { RunScope };

export type HeaderFields = Omit<ActivationHeader, 'v' | 'type' | 'runId' | 'configHash' | 'sender' | 'ts'>;

/** Writes a header and its values; returns the payload bytes written (for the bench's bytes per token). */
export async function writeTensor(io: FramedStream, scope: RunScope, head: HeaderFields, values: Float32Array): Promise<number> {
  const base = envelope(scope, Date.now());
  const expected = head.B * head.T * head.C;
  if (values.length !== expected) throw new PipelineStreamError(`tensor has ${values.length} values, the header says ${expected}`);
  for (let i = 0; i < values.length; i++) {
    if (!(Math.abs(values[i]) <= MAX_ACTIVATION_ABS)) throw new PipelineStreamError(`micro-batch ${head.micro}: ${head.direction === 'forward' ? 'activations' : 'gradients'} of this stage are not finite or beyond ±${MAX_ACTIVATION_ABS} (diverged)`, scope.sender);
  }
  await io.write({ ...base, type: 'activation', ...head });
  const payload = head.dtype === 'float16' ? toFloat16(values) : values;
  for (const { offset, length } of partsOf(0, payload.length)) {
    await io.write({ ...base, type: 'act-part', round: head.round, attempt: head.attempt, micro: head.micro, offset, total: payload.length, values: payload.subarray(offset, offset + length) });
  }
  return payload.byteLength + head.targets.byteLength + head.weights.byteLength;
}

/** Reads the next header; a `pipe-error` from the other side is thrown with the peer it names. */
export async function readHeader(io: FramedStream): Promise<ActivationHeader> {
  const first = await io.read();
  if (!first) throw new PipelineStreamError('the stream ended before a header');
  if (!first.ok) throw new PipelineStreamError(`rejected header (${first.reason}: ${first.detail})`);
  if (first.msg.type === 'pipe-error') throw new PipelineStreamError(first.msg.reason, first.msg.failed);
  if (first.msg.type !== 'activation') throw new PipelineStreamError(`expected an activation header, got ${first.msg.type}`);
  return first.msg;
}

/**
 * Reads the values a header announces, as float32. Call it only once the header's shape is checked against
 * the run (B, T, C): the header decides how much is allocated.
 */
export async function readValues(io: FramedStream, head: ActivationHeader): Promise<{ values: Float32Array; bytes: number }> {
  const total = head.B * head.T * head.C;
  const half = head.dtype === 'float16';
  const raw = half ? new Uint16Array(total) : new Float32Array(total);
  let filled = 0;
  while (filled < total) {
    const r = await io.read();
    if (!r) throw new PipelineStreamError(`the stream ended after ${filled} of ${total} values`);
    if (!r.ok) throw new PipelineStreamError(`rejected frame (${r.reason}: ${r.detail})`);
    const p = r.msg;
    if (p.type !== 'act-part' || p.micro !== head.micro || p.round !== head.round || p.attempt !== head.attempt) throw new PipelineStreamError(`unexpected ${p.type} frame inside micro-batch ${head.micro}`);
    // Frames come in order and back to back: no gap can stay zero-filled, no overlap can count twice.
    if (p.total !== total || p.offset !== filled || p.values instanceof Uint16Array !== half) throw new PipelineStreamError(`frame at ${p.offset} does not fit micro-batch ${head.micro}'s ${total} ${head.dtype} values`);
    if (half) (raw as Uint16Array).set(p.values as Uint16Array, p.offset);
    else (raw as Float32Array).set(p.values as Float32Array, p.offset);
    filled += p.values.length;
  }
  const values = half ? fromFloat16(raw as Uint16Array) : (raw as Float32Array);
  return { values, bytes: raw.byteLength + head.targets.byteLength + head.weights.byteLength };
}

/** Tells the upstream peer why its micro-batch could not pass. */
export async function writeError(io: FramedStream, scope: RunScope, round: number, attempt: number, micro: number, failed: string, reason: string): Promise<void> {
  await io.write({ ...envelope(scope, Date.now()), type: 'pipe-error', round, attempt, micro, failed, reason: reason.slice(0, 500) });
}
