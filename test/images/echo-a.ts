// Echo service, image a (see echo-lib.ts).
import { runEcho } from './echo-lib.js';

await runEcho('a');
