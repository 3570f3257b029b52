/*
 * examples/kv/v2: version 2 of the key-value service (the body is service.ts).
 *   node dist/examples/kv/v2.js [--mode luo|plain|json] [--port P] [--name N | --rundir D]
 *                               [--entries N] [--state-bytes B] [--state-file F]
 * A usage error or a store that cannot be opened exits 1 with one line on stderr.
 */
import { parseArgs, runService } from './service.js';

try {
  await runService(2, parseArgs(process.argv.slice(2)));
} catch (e) {
  process.stderr.write(`kv v2: ${(e as Error).message}\n`);
  process.exit(1);
}
