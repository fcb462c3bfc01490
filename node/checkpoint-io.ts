/**
 * Checkpoint files: written atomically (temp file in the same directory, fsync, rename, fsync the directory),
 * so a crash or Ctrl-C never leaves a half-written checkpoint where a good one was.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { decodeCheckpoint, encodeCheckpoint, type Checkpoint } from '../engine/checkpoint.ts';
import { CheckpointError } from '../engine/errors.ts';

/** Writes bytes to `path` atomically. */
export function writeFileAtomic(path: string, bytes: Uint8Array | string, mode = 0o644): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w', mode);
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  try {
    const dirFd = openSync(dirname(path), 'r');
    fsyncSync(dirFd);
    closeSync(dirFd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  }
}

export function saveCheckpoint(path: string, c: Checkpoint): void {
  writeFileAtomic(path, encodeCheckpoint(c));
}

export function loadCheckpoint(path: string): Checkpoint {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new CheckpointError(`cannot read checkpoint ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return decodeCheckpoint(bytes);
  } catch (err) {
    throw new CheckpointError(`${path}: ${(err as Error).message}`);
  }
}
