// A successor starts its control device's worker before it blocks for the handover, and waits
// until that worker has loaded before it says it is ready (so the worker's start-up is not in
// the pause). The device then serves on that same worker.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import test from 'node:test';
import { DeviceClient, State } from '../src/index.js';
import { structs } from '../src/device/client.js';
import { IOCTL } from '../src/uapi/protocol.js';
import { imagePath, tmpDir } from './helpers.js';

test('a prewarmed device worker reports that it has started, and the device then serves on it', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [imagePath('device-prewarm-probe')], { env: { ...process.env, LUO_RUNDIR: tmpDir() }, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')));
      });
      child.once('exit', (c) => reject(new Error(`probe exited ${c}`)));
    });
    const out = JSON.parse(line) as { started: boolean; waitedMs: number; path: string };
    assert.equal(out.started, true);
    assert.ok(out.waitedMs < 10_000, `waited ${out.waitedMs} ms`);
    const c = DeviceClient.connect(out.path);
    try {
      assert.equal(c.request(IOCTL.GET_STATE, structs.u32()).struct.readUInt32LE(4), State.NORMAL);
    } finally {
      c.close();
    }
  } finally {
    child.kill('SIGKILL');
  }
});
