// The control device's protocol, with datagrams built byte by byte (not through luo's codec):
// every ioctl, every error, oversized and short structs, truncated datagrams, unknown numbers,
// missing and extra fds, a second agent, a peer with another uid, and disconnects. After every
// bad request the service still serves and nothing preserved is lost.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as sys from '../src/sys/index.js';
import { startDeviceService, tmpDir, type DeviceService } from './helpers.js';

let svc: DeviceService;
let dev = '';

before(async () => {
  svc = await startDeviceService({ LUO_RUNDIR: tmpDir('luo-dev-'), DEVICE_ALLOW_UIDS: '65533' });
  dev = svc.path;
});
after(() => svc.child.kill('SIGKILL'));

/** Little-endian helpers for building requests by hand. */
const u32 = (v: number): number[] => [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255];
const u64 = (v: number): number[] => [...u32(v), 0, 0, 0, 0];
const req = (cmd: number, struct: number[]): Buffer => Buffer.from([...u32(cmd), ...struct]);

function call(fd: number, bytes: Buffer | number[], fds: number[] = []): { result: number; struct: number[]; fds: number[] } {
  sys.sendPacket(fd, Buffer.from(bytes), fds);
  const pk = sys.recvPacket(fd)!;
  assert.ok(pk && pk.data.length >= 4, 'a reply');
  return { result: pk.data.readInt32LE(0), struct: [...pk.data.subarray(4)], fds: pk.fds };
}
const open = (): number => sys.seqpacketConnect(dev);
const getState = (fd: number): number => call(fd, req(0xba03, [...u32(8), 0, 0, 0, 0])).struct[4]!;
const svcReport = (): Promise<Record<string, any>> => svc.report();
const E = { EPERM: -1, ENOENT: -2, EBADF: -9, EBUSY: -16, EEXIST: -17, EINVAL: -22, ENOTTY: -25, E2BIG: -7, EOPNOTSUPP: -95 };

test('the socket is 0600 in a 0700 directory', () => {
  assert.equal(fs.statSync(dev).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.dirname(dev)).mode & 0o777, 0o700);
});

test('GET_STATE (0xBA03): result 0 and the state at offset 4', () => {
  const fd = open();
  const r = call(fd, req(0xba03, [...u32(8), 0, 0, 0, 0]));
  assert.deepEqual(r, { result: 0, struct: [8, 0, 0, 0, 1, 0, 0, 0], fds: [] });
  sys.close(fd);
});

test('size below min_size: EINVAL; a larger struct with a zero tail is accepted and the reply is cut to the known size; a non-zero tail is E2BIG', () => {
  const fd = open();
  assert.equal(call(fd, req(0xba03, [...u32(4), 0, 0, 0, 0])).result, E.EINVAL);
  const big = call(fd, req(0xba03, [...u32(16), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  assert.equal(big.result, 0);
  assert.deepEqual(big.struct, [16, 0, 0, 0, 1, 0, 0, 0], 'min(user size, known size) = 8 bytes back');
  assert.equal(call(fd, req(0xba03, [...u32(16), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])).result, E.E2BIG);
  assert.equal(getState(fd), 1, 'still serving');
  sys.close(fd);
});

test('truncated and empty datagrams, and unknown numbers: EINVAL / ENOTTY, and the service still serves', () => {
  const fd = open();
  assert.equal(call(fd, req(0xba05, [...u32(24), 0, 0, 0, 0])).result, E.EINVAL, 'size claims 24, 8 bytes came');
  assert.equal(call(fd, [0x03, 0xba]).result, E.EINVAL, 'no full ioctl number');
  assert.equal(call(fd, []).result, E.EINVAL, 'an empty datagram');
  assert.equal(call(fd, u32(0xba03)).result, E.EINVAL, 'no size field');
  assert.equal(call(fd, req(0xba07, [...u32(8), 0, 0, 0, 0])).result, E.ENOTTY);
  assert.equal(call(fd, req(0x1234, [...u32(8), 0, 0, 0, 0])).result, E.ENOTTY);
  assert.equal(getState(fd), 1);
  sys.close(fd);
});

test('FD_PRESERVE (0xBA00): the fd rides as SCM_RIGHTS; duplicate EEXIST; missing fd EBADF; extra fds EINVAL (and closed)', async () => {
  const fd = open();
  const m = sys.memfdCreate('proto');
  const pres = (token: number, fds: number[]): number => call(fd, req(0xba00, [...u32(16), ...u32(0), ...u64(token)]), fds).result;
  assert.equal(pres(0x2a, [m]), 0);
  assert.equal(pres(0x2a, [m]), E.EEXIST);
  assert.equal(pres(0x2b, []), E.EBADF);
  assert.equal(pres(0x2c, [m, m]), E.EINVAL);
  assert.deepEqual((await svcReport()).tokens, ['42']);
  // FD_UNPRESERVE (0xBA01): padding must be zero; unknown ENOENT
  assert.equal(call(fd, req(0xba01, [...u32(16), 1, 0, 0, 0, ...u64(0x2a)])).result, E.EINVAL, 'non-zero padding');
  assert.equal(call(fd, req(0xba01, [...u32(16), 0, 0, 0, 0, ...u64(0x99)])).result, E.ENOENT);
  assert.equal(call(fd, req(0xba01, [...u32(16), 0, 0, 0, 0, ...u64(0x2a)])).result, 0);
  assert.deepEqual((await svcReport()).tokens, []);
  sys.close(m);
  sys.close(fd);
});

test('FD_RESTORE (0xBA02) outside UPDATED: EBUSY, and no fd comes with an error', () => {
  const fd = open();
  const r = call(fd, req(0xba02, [...u32(16), ...u32(0), ...u64(1)]));
  assert.equal(r.result, E.EBUSY);
  assert.deepEqual(r.fds, []);
  sys.close(fd);
});

test('SET_EVENT (0xBA04): PREPARE, FREEZE is EINVAL, an unknown event EOPNOTSUPP, CANCEL; errors from LUO come back', () => {
  const fd = open();
  const ev = (e: number): number => call(fd, req(0xba04, [...u32(8), ...u32(e)])).result;
  assert.equal(ev(0), 0);
  assert.equal(getState(fd), 2);
  assert.equal(ev(0), E.EINVAL, 'PREPARE twice');
  assert.equal(ev(1), E.EINVAL, 'FREEZE');
  assert.equal(ev(9), E.EOPNOTSUPP);
  const m = sys.memfdCreate('late');
  assert.equal(call(fd, req(0xba00, [...u32(16), ...u32(0), ...u64(5)]), [m]).result, E.EBUSY, 'FD_PRESERVE in PREPARED: the error is returned (v3 swallowed it)');
  sys.close(m);
  assert.equal(ev(2), E.EINVAL, 'FINISH outside UPDATED');
  assert.equal(ev(3), 0);
  assert.equal(getState(fd), 1);
  assert.equal(ev(3), E.ENOENT, 'CANCEL in NORMAL');
  sys.close(fd);
});

test('GET_FD_STATE (0xBA05) and SET_FD_EVENT (0xBA06); a 16-byte GET_FD_STATE is accepted but carries no state back (v3)', () => {
  const fd = open();
  const m = sys.memfdCreate('fdst');
  assert.equal(call(fd, req(0xba00, [...u32(16), ...u32(0), ...u64(7)]), [m]).result, 0);
  sys.close(m);
  const st = (): number[] => call(fd, req(0xba05, [...u32(24), 0, 0, 0, 0, ...u64(7), ...u32(0), 0, 0, 0, 0])).struct;
  assert.equal(st()[16], 1);
  const short = call(fd, req(0xba05, [...u32(16), 0, 0, 0, 0, ...u64(7)]));
  assert.equal(short.result, 0);
  assert.equal(short.struct.length, 16);
  assert.equal(call(fd, req(0xba05, [...u32(24), 0, 1, 0, 0, ...u64(7), 0, 0, 0, 0, 0, 0, 0, 0])).result, E.EINVAL, 'non-zero padding');
  assert.equal(call(fd, req(0xba05, [...u32(24), 1, 0, 0, 0, ...u64(7), 0, 0, 0, 0, 0, 0, 0, 0])).result, E.ENOENT, 'incoming set not built');
  assert.equal(call(fd, req(0xba06, [...u32(16), ...u32(0), ...u64(7)])).result, 0);
  assert.equal(st()[16], 2, 'PREPARED');
  assert.equal(call(fd, req(0xba06, [...u32(16), ...u32(3), ...u64(7)])).result, 0);
  assert.equal(st()[16], 1);
  assert.equal(call(fd, req(0xba06, [...u32(16), ...u32(2), ...u64(7)])).result, E.EBUSY, 'FINISH outside UPDATED');
  assert.equal(call(fd, req(0xba06, [...u32(16), ...u32(8), ...u64(7)])).result, E.EOPNOTSUPP);
  assert.equal(call(fd, req(0xba06, [...u32(16), ...u32(0), ...u64(8)])).result, E.ENOENT);
  sys.close(fd);
});

test('one agent at a time: a second connection gets EBUSY as its only reply and is closed', () => {
  const a = open();
  getState(a);
  const b = open();
  const pk = sys.recvPacket(b)!;
  assert.equal(pk.data.readInt32LE(0), E.EBUSY);
  assert.equal(pk.data.length, 4);
  assert.equal(sys.recvPacket(b)!.eof, true, 'then closed');
  sys.close(b);
  assert.equal(getState(a), 1, 'the first agent is unaffected');
  sys.close(a);
});

test('a peer with another uid gets EPERM (unless allow-listed)', async () => {
  fs.chmodSync(path.dirname(dev), 0o755);
  fs.chmodSync(dev, 0o666);
  try {
    // A refused peer's one reply comes unasked, and the service may close before the send:
    // a failed send is fine, the reply is still there to read.
    const py = `import socket,struct,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\ns.connect(sys.argv[1])\ntry:\n  s.send(struct.pack('<III',0xBA03,8,0))\nexcept OSError:\n  pass\nprint(struct.unpack('<i',s.recv(64)[:4])[0])`;
    const as = (uid: number): string => {
      const r = spawnSync('/usr/bin/python3', ['-c', py, dev], { uid, gid: 65534, encoding: 'utf8', cwd: '/tmp' });
      return r.stdout.trim() || `(no output; stderr: ${r.stderr.trim()})`;
    };
    assert.equal(as(65534), String(E.EPERM), 'uid 65534: not root, not the service\'s uid, not allowed');
    assert.equal(as(65533), '0', 'uid 65533 is on the allow-list');
    assert.ok((await svcReport()).denied >= 1);
  } finally {
    fs.chmodSync(dev, 0o600);
    fs.chmodSync(path.dirname(dev), 0o700);
  }
});

test('closing the connection drops what that agent preserved; the global state stays (v3 §2.4)', async () => {
  for (const prepared of [false, true]) {
    let fd = open();
    const m = sys.memfdCreate('drop');
    assert.equal(call(fd, req(0xba00, [...u32(16), ...u32(0), ...u64(0x77)]), [m]).result, 0);
    sys.close(m);
    if (prepared) assert.equal(call(fd, req(0xba04, [...u32(8), ...u32(0)])).result, 0);
    sys.close(fd);
    let rep = await svcReport();
    for (let i = 0; i < 100 && rep.tokens.length; i++) {
      await new Promise((r) => setTimeout(r, 50)); // the hangup is seen asynchronously
      rep = await svcReport();
    }
    assert.deepEqual(rep.tokens, [], 'the token is dropped');
    assert.equal(rep.state, prepared ? 'prepared' : 'normal', 'the state stays');
    fd = open();
    if (prepared) assert.equal(call(fd, req(0xba04, [...u32(8), ...u32(3)])).result, 0, 'a new agent can CANCEL');
    assert.equal(getState(fd), 1);
    sys.close(fd);
  }
});
