/*
 * Reads a state file in a tight loop for DURATION ms and prints the distinct contents it saw
 * (and how many reads failed), as one JSON line. Used to check that updates are atomic.
 */
import fs from 'node:fs';

const [file, ms] = [process.argv[2]!, Number(process.argv[3] ?? '1500')];
const seen = new Map<string, number>();
let errors = 0;
const end = Date.now() + ms;
while (Date.now() < end) {
  try {
    const s = fs.readFileSync(file, 'utf8');
    seen.set(s, (seen.get(s) ?? 0) + 1);
  } catch {
    errors++;
  }
}
console.log(JSON.stringify({ seen: Object.fromEntries(seen), errors }));
