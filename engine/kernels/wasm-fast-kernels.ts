/**
 * Faster kernels for TF.js's WASM backend, registered over its own.
 *
 * Why: tfjs-backend-wasm sends a matmul to XNNPACK (~15–28 GFLOP/s here) only when it is a single 2-D product
 * without transpose flags. Batched products (attention) and transposed ones (every matmul gradient autograd
 * emits) fall to a naive loop at 0.5–2 GFLOP/s. Our BatchMatMul transposes explicitly, then runs each batch
 * entry as its own 2-D XNNPACK product on views into the WASM heap — no copies. Measured on this machine:
 * batched [64,128,32]x[64,32,128] 1.6 -> 14.9 GFLOP/s; x^T·dy [2048,128]^T x [2048,512] 1.1 -> 17 GFLOP/s.
 * Sums over leading axes (bias gradients) are done in place rather than after a transpose.
 * WASM's Slice also copies the *whole* input out of the heap for every slice; ours copies only the slice when
 * it is contiguous. WASM's Transpose is fast for rank 3–4 but slow for rank 2 and very slow for rank >= 5
 * (the attention's q/k/v split: 54 ms for 3 MiB); ours does those in JavaScript on heap views (2.5 ms).
 *
 * This reaches into the backend's documented-but-internal fields (dataIdMap, the Emscripten module), so
 * `installFastWasmKernels` checks they exist and leaves the stock kernels in place when they do not.
 */
import * as tf from '@tensorflow/tfjs-core';

interface TensorData {
  id: number;
  memoryOffset: number;
}

interface WasmModule {
  cwrap: (name: string, ret: null, args: string[]) => (...args: unknown[]) => void;
  HEAPU8: Uint8Array;
  tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void };
}

interface WasmBackendLike {
  wasm: WasmModule;
  dataIdMap: { get(dataId: object): TensorData | undefined };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(dataId: object): boolean;
}

type KernelArgs = { inputs: Record<string, tf.TensorInfo>; backend: WasmBackendLike; attrs: Record<string, unknown> };
type RawMatMul = (aId: number, aShape: Uint8Array, aRank: number, bId: number, bShape: Uint8Array, bRank: number, ta: number, tb: number, outId: number) => void;

/** Ids for heap views live far above the backend's own counter, so they can never collide. */
let nextViewId = 2 ** 30;
const rawMatMuls = new WeakMap<WasmModule, RawMatMul>();

function rawMatMul(be: WasmBackendLike): RawMatMul {
  let f = rawMatMuls.get(be.wasm);
  if (!f) {
    f = be.wasm.cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']) as unknown as RawMatMul;
    rawMatMuls.set(be.wasm, f);
  }
  return f;
}

function shapeBytes(shape: number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}

function product(dims: number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

function info(be: WasmBackendLike, t: tf.TensorInfo): TensorData {
  const d = be.dataIdMap.get(t.dataId);
  if (!d) throw new Error('fast wasm kernel: tensor data not found on the wasm backend');
  return d;
}

function swapLastTwo(be: WasmBackendLike, t: tf.TensorInfo, transposeKernel: tf.KernelConfig): tf.TensorInfo {
  const r = t.shape.length;
  const perm = Array.from({ length: r }, (_, i) => i);
  [perm[r - 1], perm[r - 2]] = [perm[r - 2], perm[r - 1]];
  return transposeKernel.kernelFunc({ inputs: { x: t }, backend: be as unknown as tf.KernelBackend, attrs: { perm } }) as tf.TensorInfo;
}

function makeBatchMatMul(transposeKernel: tf.KernelConfig) {
  return ({ inputs, backend: be, attrs }: KernelArgs): tf.TensorInfo => {
    let a = inputs.a;
    let b = inputs.b;
    const temps: tf.TensorInfo[] = [];
    if (attrs.transposeA) temps.push((a = swapLastTwo(be, a, transposeKernel)));
    if (attrs.transposeB) temps.push((b = swapLastTwo(be, b, transposeKernel)));
    const M = a.shape[a.shape.length - 2];
    const K = a.shape[a.shape.length - 1];
    const N = b.shape[b.shape.length - 1];
    if (K !== b.shape[b.shape.length - 2]) {
      throw new Error(`matMul: inner dimensions differ: a ${a.shape} and b ${b.shape} (after transposes)`);
    }
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    const batchA = product(outerA);
    const batchB = product(outerB);
    if (batchA !== batchB && batchA !== 1 && batchB !== 1) {
      throw new Error(`matMul: batch shapes ${outerA} and ${outerB} do not broadcast`);
    }
    const batch = Math.max(batchA, batchB);
    const outShape = [...tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB), M, N];
    const out = be.makeOutput(outShape, 'float32');
    const matmul = rawMatMul(be);
    const aOff = info(be, a).memoryOffset;
    const bOff = info(be, b).memoryOffset;
    const outOff = info(be, out).memoryOffset;
    // A shared left operand [1, M, K] against a batch of right ones folds into one product when the right
    // batch is a single matrix; otherwise each entry is its own 2-D product.
    const sA = shapeBytes([1, M, K]);
    const sB = shapeBytes([1, K, N]);
    for (let i = 0; i < batch; i++) {
      const ia = nextViewId++;
      const ib = nextViewId++;
      const io = nextViewId++;
      be.wasm.tfjs.registerTensor(ia, M * K, aOff + 4 * M * K * (batchA === 1 ? 0 : i));
      be.wasm.tfjs.registerTensor(ib, K * N, bOff + 4 * K * N * (batchB === 1 ? 0 : i));
      be.wasm.tfjs.registerTensor(io, M * N, outOff + 4 * M * N * i);
      try {
        matmul(ia, sA, 3, ib, sB, 3, 0, 0, io);
      } finally {
        // Disposing a view frees XNNPACK's packed copy of it; the heap bytes belong to the real tensors.
        be.wasm.tfjs.disposeData(ia);
        be.wasm.tfjs.disposeData(ib);
        be.wasm.tfjs.disposeData(io);
      }
    }
    if (nextViewId > 2 ** 31 - 16) nextViewId = 2 ** 30;
    for (const t of temps) be.disposeData(t.dataId);
    return out;
  };
}

function makeSlice(stockSlice: tf.KernelConfig) {
  return (args: KernelArgs): tf.TensorInfo => {
    const { inputs, backend: be, attrs } = args;
    const x = inputs.x;
    const [begin, size] = tf.slice_util.parseSliceParams(x as tf.TensorInfo as tf.Tensor, attrs.begin as number[], attrs.size as number[]);
    const elementBytes = x.dtype === 'float32' || x.dtype === 'int32' ? 4 : 0;
    if (elementBytes === 0 || !tf.slice_util.isSliceContinous(x.shape, begin, size)) {
      return stockSlice.kernelFunc(args as unknown as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo;
    }
    const flatOffset = tf.slice_util.computeFlatOffset(begin, tf.util.computeStrides(x.shape));
    const out = be.makeOutput(size, x.dtype);
    const n = product(size);
    if (n > 0) {
      const src = info(be, x).memoryOffset + flatOffset * elementBytes;
      be.wasm.HEAPU8.copyWithin(info(be, out).memoryOffset, src, src + n * elementBytes);
    }
    return out;
  };
}

/**
 * Permutes src (shape, row-major) into dst. Input axes that stay adjacent in the permutation are merged first,
 * so [B,T,nh,hs] -> [B,nh,T,hs] moves runs of hs values at once.
 */
export function transposeInto(src: Float32Array | Int32Array, shape: number[], perm: number[], dst: Float32Array | Int32Array): void {
  const { outShape, inStrides } = collapsePermutation(shape, perm);
  const rank = outShape.length;
  const inner = outShape[rank - 1];
  const innerStride = inStrides[rank - 1];
  const outer = src.length / Math.max(1, inner);
  const idx = new Array<number>(rank).fill(0);
  let outPos = 0;
  let inBase = 0;
  for (let o = 0; o < outer; o++) {
    if (innerStride === 1) dst.set(src.subarray(inBase, inBase + inner), outPos);
    else for (let j = 0, s = inBase; j < inner; j++, s += innerStride) dst[outPos + j] = src[s];
    outPos += inner;
    for (let ax = rank - 2; ax >= 0; ax--) {
      idx[ax]++;
      inBase += inStrides[ax];
      if (idx[ax] < outShape[ax]) break;
      inBase -= inStrides[ax] * outShape[ax];
      idx[ax] = 0;
    }
  }
}

/** The permutation with adjacent input axes merged: output shape and, per output axis, its input stride. */
export function collapsePermutation(shape: number[], perm: number[]): { outShape: number[]; inStrides: number[] } {
  const groups: number[][] = [];
  for (const d of perm) {
    const g = groups[groups.length - 1];
    if (g && g[g.length - 1] + 1 === d) g.push(d);
    else groups.push([d]);
  }
  // Merged input axes in input order, with their sizes and strides.
  const byInput = [...groups].sort((a, b) => a[0] - b[0]);
  const sizes = byInput.map((g) => g.reduce((s, d) => s * shape[d], 1));
  const strides = new Array<number>(sizes.length);
  let acc = 1;
  for (let i = sizes.length - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= sizes[i];
  }
  const at = (g: number[]) => byInput.indexOf(g);
  return { outShape: groups.map((g) => sizes[at(g)]), inStrides: groups.map((g) => strides[at(g)]) };
}

function heapView(be: WasmBackendLike, t: tf.TensorInfo, size: number): Float32Array | Int32Array {
  const off = info(be, t).memoryOffset;
  return t.dtype === 'int32' ? new Int32Array(be.wasm.HEAPU8.buffer, off, size) : new Float32Array(be.wasm.HEAPU8.buffer, off, size);
}

function makeTranspose(stockTranspose: tf.KernelConfig) {
  return (args: KernelArgs): tf.TensorInfo => {
    const { inputs, backend: be, attrs } = args;
    const x = inputs.x;
    const perm = attrs.perm as number[];
    const rank = collapsePermutation(x.shape, perm).outShape.length;
    // Measured: stock XNNPACK transposes win at merged rank 3-4; ours at rank 2 and >= 5.
    if ((rank !== 2 && rank < 5) || (x.dtype !== 'float32' && x.dtype !== 'int32')) {
      return stockTranspose.kernelFunc(args as unknown as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo;
    }
    const outShape = perm.map((d) => x.shape[d]);
    const out = be.makeOutput(outShape, x.dtype);
    const n = product(x.shape);
    // Views are taken after makeOutput: an allocation may grow (and so replace) the heap buffer.
    if (n > 0) transposeInto(heapView(be, x, n), x.shape, perm, heapView(be, out, n));
    return out;
  };
}

/**
 * Sum over leading axes (bias and LayerNorm gain gradients: [N, C] -> [C]). The stock kernel transposes the
 * reduced axes innermost first (a full copy through its slow transpose); this adds rows in place, in float32
 * like the stock kernel. Measured for [2048, 512]: stock 7.8 ms, as a [1,N]x[N,C] matmul 5 ms, this ~1 ms.
 */
function makeSum(stockSum: tf.KernelConfig) {
  return (args: KernelArgs): tf.TensorInfo => {
    const { inputs, backend: be, attrs } = args;
    const x = inputs.x;
    const rank = x.shape.length;
    const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape).sort((a, b) => a - b);
    const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
    if (!leading || x.dtype !== 'float32') return stockSum.kernelFunc(args as unknown as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo;
    const rows = product(x.shape.slice(0, axes.length));
    const keptShape = x.shape.slice(axes.length);
    const cols = product(keptShape);
    const outShape = attrs.keepDims ? [...axes.map(() => 1), ...keptShape] : keptShape;
    const out = be.makeOutput(outShape, 'float32');
    const src = heapView(be, x, rows * cols) as Float32Array;
    const dst = heapView(be, out, cols) as Float32Array;
    dst.fill(0);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      for (let c = 0; c < cols; c++) dst[c] += src[base + c];
    }
    return out;
  };
}

let installed = false;

/**
 * Registers the faster BatchMatMul and Slice over the WASM backend's. Call after `tf.setBackend('wasm')`.
 * Returns the kernels replaced (empty when the backend's internals are not as expected).
 */
export function installFastWasmKernels(): string[] {
  if (installed) return ['BatchMatMul', 'Slice', 'Transpose', 'Sum'];
  const be = tf.findBackend('wasm') as unknown as WasmBackendLike | null;
  const transpose = tf.getKernel('Transpose', 'wasm');
  const stockSlice = tf.getKernel('Slice', 'wasm');
  const stockSum = tf.getKernel('Sum', 'wasm');
  const ok = be && be.dataIdMap && typeof be.wasm?.tfjs?.registerTensor === 'function' && be.wasm.HEAPU8 && typeof be.wasm.cwrap === 'function';
  if (!ok || !transpose || !stockSlice || !stockSum || !tf.getKernel('BatchMatMul', 'wasm')) return [];
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({ kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc: makeBatchMatMul(transpose) as unknown as tf.KernelFunc });
  tf.unregisterKernel('Slice', 'wasm');
  tf.registerKernel({ kernelName: 'Slice', backendName: 'wasm', kernelFunc: makeSlice(stockSlice) as unknown as tf.KernelFunc });
  tf.unregisterKernel('Transpose', 'wasm');
  tf.registerKernel({ kernelName: 'Transpose', backendName: 'wasm', kernelFunc: makeTranspose(transpose) as unknown as tf.KernelFunc });
  tf.unregisterKernel('Sum', 'wasm');
  tf.registerKernel({ kernelName: 'Sum', backendName: 'wasm', kernelFunc: makeSum(stockSum) as unknown as tf.KernelFunc });
  installed = true;
  return ['BatchMatMul', 'Slice', 'Transpose', 'Sum'];
}
