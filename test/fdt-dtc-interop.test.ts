// Interop with dtc/fdtdump (Debian package device-tree-compiler): our blobs decode with dtc,
// and blobs dtc compiles decode to the tree the source describes. Skips, naming the package,
// where the tools are missing (CI installs them).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { Fdt, FdtNode, decode, encode, nodesEqual, toDts } from '../src/fdt/index.js';
import { hasTool, tmpDir } from './helpers.js';

const skip = !hasTool('dtc') || !hasTool('fdtdump') ? 'dtc/fdtdump missing: install the Debian package device-tree-compiler' : false;
const dir = tmpDir('luo-dtc-');
const dtc = (args: string[], input?: Uint8Array | string): Buffer => execFileSync('dtc', ['-q', ...args], { input, maxBuffer: 64 << 20 });

const SOURCE = `/dts-v1/;
/memreserve/ 0x10000000 0x4000;
/memreserve/ 0x20000000 0x100000;
/ {
	compatible = "luo-v1";
	#address-cells = <2>;
	empty-prop;
	strings = "first", "second", "third";
	cells = <0x1 0x2 0xdeadbeef>;
	bytes = [01 02 03 04 05];
	mixed = <0x10>, "s", [ff];
	label_here: subsystems {
		compatible = "subsystems-v1";
		cache = <0x0 0x2000>;
		nested@1 {
			deeper {
				ref = <&label_here>;
			};
		};
	};
	other {
	};
};
`;

function expected(): Fdt {
  const r = new FdtNode('');
  r.setString('compatible', 'luo-v1').setU32('#address-cells', 2).setEmpty('empty-prop');
  r.setStringList('strings', ['first', 'second', 'third']).setCells('cells', [1, 2, 0xdeadbeef]);
  r.setBytes('bytes', new Uint8Array([1, 2, 3, 4, 5]));
  r.setBytes('mixed', new Uint8Array([0, 0, 0, 0x10, 0x73, 0, 0xff]));
  const s = r.addChild('subsystems');
  s.setString('compatible', 'subsystems-v1').setU64('cache', 0x2000);
  s.addChild('nested@1').addChild('deeper').setU32('ref', 1); // the phandle dtc assigns
  s.setU32('phandle', 1);
  r.addChild('other');
  return new Fdt(r, [{ address: 0x10000000n, size: 0x4000n }, { address: 0x20000000n, size: 0x100000n }]);
}

test('a blob dtc compiles (nested nodes, empty props, string lists, cells, labels, /memreserve/) decodes to the same tree', { skip }, () => {
  const blob = dtc(['-I', 'dts', '-O', 'dtb', '-'], SOURCE);
  const t = decode(new Uint8Array(blob));
  const want = expected();
  assert.deepEqual(t.memReserve, want.memReserve);
  assert.ok(nodesEqual(t.root, want.root), toDts(t));
});

test('trees we encode decode with dtc -I dtb and fdtdump, and dtc re-encodes them to the same tree', { skip }, () => {
  const want = expected();
  const ours = encode(want);
  const file = path.join(dir, 'ours.dtb');
  fs.writeFileSync(file, ours);
  const dts = dtc(['-I', 'dtb', '-O', 'dts', file]).toString();
  assert.match(dts, /compatible = "luo-v1";/);
  assert.match(dts, /\/memreserve\/\s+0x0*10000000 0x0*4000;/);
  const dump = execFileSync('fdtdump', [file]).toString();
  assert.match(dump, /subsystems \{/);
  const again = decode(new Uint8Array(dtc(['-I', 'dtb', '-O', 'dtb', file])));
  assert.ok(nodesEqual(again.root, want.root));
});

test('toDts output compiles with dtc back to the same tree', { skip }, () => {
  const want = expected();
  want.root.addChild('weird').setString('quote', 'a "q" and \\ back').setBytes('odd', new Uint8Array([0, 1, 2])).setBytes('nul-string', new Uint8Array([0x61, 0, 0, 0x62, 0]));
  const src = toDts(want);
  const back = decode(new Uint8Array(dtc(['-I', 'dts', '-O', 'dtb', '-'], src)));
  assert.ok(nodesEqual(back.root, want.root), src);
  assert.deepEqual(back.memReserve, want.memReserve);
});
