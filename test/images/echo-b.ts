// Echo service, image b (see echo-lib.ts).
import { runEcho } from './echo-lib.js';

await runEcho('b');
