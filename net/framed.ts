/**
 * Length-prefixed protocol messages over a libp2p stream: every frame is decoded and validated by protocol/,
 * and a rejected frame is reported (never thrown) so the caller can count it and drop the peer if it persists.
 * Cancellation: one AbortSignal per stream aborts the stream itself (reads and writes then fail), rather than
 * a listener per read and write, which would pile up on a signal shared by many frames.
 */
import type { Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { decodeMessage, encodeMessage, MAX_MESSAGE_BYTES, type DecodeResult, type Message, type ValidationContext } from '../protocol/index.ts';

export interface FramedStream {
  /** Next validated message; undefined at a clean end of stream. Bad frames are results with ok: false. */
  read(): Promise<DecodeResult | undefined>;
  write(msg: Message): Promise<void>;
  close(): Promise<void>;
  abort(err: Error): void;
}

export function framed(stream: Stream, ctx: () => ValidationContext, signal?: AbortSignal): FramedStream {
  // maxDataLength above ours: a frame a little over the limit is read and rejected as 'size' by decodeMessage
  // instead of breaking the stream mid-frame. Anything larger errors the stream, which is then dropped.
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES * 2 });
  const onAbort = () => stream.abort(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  const detach = () => signal?.removeEventListener('abort', onAbort);
  return {
    async read() {
      let bytes;
      try {
        bytes = await lp.read();
      } catch (err) {
        // The remote closed its side after its last frame: a normal end.
        if ((err as Error).name === 'UnexpectedEOFError' && !signal?.aborted) return undefined;
        throw err;
      }
      return decodeMessage(bytes.subarray(), ctx());
    },
    async write(msg) {
      await lp.write(encodeMessage(msg));
    },
    async close() {
      detach();
      await stream.close();
    },
    abort(err) {
      detach();
      stream.abort(err);
    },
  };
}

/**
 * A child signal per task of a fan-out (one send per peer): the parent gets one listener in all, however many
 * tasks there are.
 */
export function fanOut(parent: AbortSignal): () => AbortSignal {
  const children = new Set<AbortController>();
  parent.addEventListener('abort', () => children.forEach((c) => c.abort(parent.reason)), { once: true });
  return () => {
    const c = new AbortController();
    if (parent.aborted) c.abort(parent.reason);
    else children.add(c);
    return c.signal;
  };
}
