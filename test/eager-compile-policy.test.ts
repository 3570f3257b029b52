// When luo's modules are compiled eagerly (src/eager.ts): by default and in a successor; not
// after an exec in place (its load is in the pause), not when node was told --lazy or
// --no-lazy, not with LUO_EAGER=0. A load that fails gives its own error.
import assert from 'node:assert/strict';
import test from 'node:test';
import { loadEagerly, wantEager } from '../src/eager.js';
import { SUCCESSOR_PREFIX, formatKhoEntry } from '../src/uapi/handover.js';

test('eager by default and in a successor; lazy after an exec, when node decides, or LUO_EAGER=0', () => {
  assert.equal(wantEager({}, []), true);
  assert.equal(wantEager({ LUO_HANDOVER: `${SUCCESSOR_PREFIX}3` }, []), true, 'a successor (the prefix luo sets: uapi/handover.ts)');
  assert.equal(wantEager({ LUO_HANDOVER: formatKhoEntry({ arenaFd: 5, rootAddr: 4096, rootSize: 512 }) }, []), false, 'after an exec in place');
  assert.equal(wantEager({}, ['--no-lazy']), false);
  assert.equal(wantEager({}, ['--lazy']), false);
  assert.equal(wantEager({}, ['--max-old-space-size=2048']), true);
  assert.equal(wantEager({ LUO_EAGER: '0' }, []), false);
  // A load that fails: its own error (and the flag set back: the next load works).
  assert.throws(() => loadEagerly(import.meta.url, './no-such-bundle.js'), { code: 'MODULE_NOT_FOUND' });
  assert.equal(typeof loadEagerly(import.meta.url, '../src/eager.js').wantEager, 'function');
});
