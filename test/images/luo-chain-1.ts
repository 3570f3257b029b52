// luo-chain image, version 1 (see luo-chain-lib.ts).
import { runGeneration } from './luo-chain-lib.js';

await runGeneration(1);
