/*
 * Test harness for the key-value example (examples/kv): start version 1 under luo, update it
 * with the real agent, stop it. The service is a real process; every test kills what it
 * started when its file ends.
 */
import fs from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';
import { Service, agent } from '../examples/kv/demo.js';
import { distRoot, tmpDir } from './helpers.js';

export const kvDir = path.join(distRoot, 'examples', 'kv');
const started: Service[] = [];
after(() => started.forEach((s) => s.stop()));

export interface Kv { svc: Service; port: number; rundir: string; args: string[] }

export async function startKv(entries = 5000): Promise<Kv> {
  const rundir = path.join(tmpDir('luo-kv-'), 'run');
  const args = ['--rundir', rundir, '--entries', String(entries)];
  const svc = new Service(path.join(kvDir, 'v1.js'), args);
  started.push(svc);
  const ready = await svc.wait((l) => l.event === 'ready', 30_000, 'the service');
  while (!fs.existsSync(path.join(rundir, 'liveupdate'))) await new Promise((r) => setTimeout(r, 10));
  return { svc, port: Number(ready.port), rundir, args };
}

/** `luo update` to version `to`; resolves with the agent's JSON report and exit code. */
export async function updateKv(kv: Kv, to: 1 | 2, cmd?: string[]): Promise<{ code: number; report: { ok: boolean; error?: string } }> {
  const r = await agent(['update', '--rundir', kv.rundir, '--json', '--', ...(cmd ?? [process.execPath, path.join(kvDir, `v${to}.js`), ...kv.args])]);
  return { code: r.code, report: JSON.parse(r.out.trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{"ok":false}') as { ok: boolean } };
}
