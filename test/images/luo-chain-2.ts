// luo-chain image, version 2 (see luo-chain-lib.ts).
import { runGeneration } from './luo-chain-lib.js';

await runGeneration(2);
