// `npm start` (the demo) with small settings: its report says nothing was lost or repeated,
// the state's checksums match across every update and the version switched each time.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { distRoot, runNode, tmpDir } from './helpers.js';

test('the demo updates the service twice and reports zero lost, zero repeated, equal checksums, the version switched', { timeout: 120_000 }, async () => {
  const json = path.join(tmpDir('luo-demo-'), 'report.json');
  const r = await runNode(path.join(distRoot, 'examples', 'kv', 'demo.js'), ['--updates', '2', '--entries', '20000', '--http', '2', '--ws', '2', '--echo', '1', '--interval', '400', '--json', json], { timeoutMs: 110_000 });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /OK: every update kept every connection, every byte and the whole state\./);
  const rep = JSON.parse(fs.readFileSync(json, 'utf8')) as { ok: boolean; rows: Array<Record<string, unknown>>; totals: Record<string, number> };
  assert.equal(rep.ok, true);
  assert.deepEqual(rep.rows.map((x) => [x.from, x.to, x.versionServed, x.migrated]), [['v1', 'v2', 'v2', 'format 1→2'], ['v2', 'v1', 'v1', 'format 2→1']]);
  for (const row of rep.rows) {
    assert.equal(row.ok, true);
    assert.equal(row.checksumOk, true);
    assert.equal(row.checksumBefore, row.checksumAfter);
    assert.match(String(row.checksumBefore), /^[0-9a-f]{16}$/);
    assert.equal(row.connectionsBefore, 5);
    assert.equal(row.connectionsAfter, 5);
    assert.equal(row.carried, 5, 'every connection (HTTP, WebSocket, echo) handed over');
    assert.equal(row.failed, 0);
    assert.equal(row.dropped, 0);
    assert.equal(row.lostOrRepeated, 0);
    assert.equal(row.mismatches, 0);
  }
  const t = rep.totals;
  assert.ok(t.requests > 0 && t.messages > 0 && t.echoedBytes > 0, JSON.stringify(t));
  assert.deepEqual([t.failed, t.dropped, t.lost, t.repeated, t.mismatches], [0, 0, 0, 0, 0]);
});
