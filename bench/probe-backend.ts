/** Exits 0 when the named backend starts here (used by the bench to decide what to measure). */
import { selectBackend } from '../node/backend.ts';

try {
  const c = await selectBackend(process.argv[2]);
  console.log(JSON.stringify(c));
  process.exit(0);
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}
