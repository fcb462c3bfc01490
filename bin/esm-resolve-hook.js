// Node resolve hook for TensorFlow.js's ESM files. tfjs-core ships its gradient registrations
// (dist/register_all_gradients.js) only as ESM whose imports omit file extensions and name directories, which
// bundlers accept and Node's ESM loader refuses. Inside @tensorflow packages only, retry such a relative import
// as FILE.js, then DIR/index.js. TF.js keeps its engine and registries on globalThis, so the gradients this loads
// register with the same engine the rest of the process uses.
export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const fromTf = context.parentURL && context.parentURL.includes('/node_modules/@tensorflow/');
    const relative = specifier.startsWith('./') || specifier.startsWith('../');
    if (!fromTf || !relative || specifier.endsWith('.js')) throw err;
    for (const candidate of [`${specifier}.js`, `${specifier}/index.js`]) {
      try {
        return await nextResolve(candidate, context);
      } catch {
        // try the next form
      }
    }
    throw err;
  }
}
