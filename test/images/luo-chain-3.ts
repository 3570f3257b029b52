// luo-chain image, version 3 (see luo-chain-lib.ts).
import { runGeneration } from './luo-chain-lib.js';

await runGeneration(3);
