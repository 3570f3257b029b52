/*
 * The echo service used by the handover tests and bench (two images: echo-a.js, echo-b.js).
 * Generation 1 listens on 127.0.0.1:0. On SIGUSR2 it PREPAREs and reboots into the other
 * image; the next generation restores the server with every connection, preserves it again
 * for the next update, FINISHes, and prints a "ready" JSON line. Everything it says goes to
 * stdout as JSON lines: {event: 'listening'|'ready'|'update-failed', ...}.
 * Env: ECHO_DRAIN_MS, ECHO_ON_UNDRAINED (carry|fail), ECHO_HTTP=1 (an http.Server instead),
 * ECHO_SUCCESSOR=1 (hand over to a pre-started successor instead of exec'ing in place; the
 * pid changes), ECHO_SUCCESSOR_TIMEOUT_MS, ECHO_NEXT (the next image's script, for failures),
 * ECHO_FREEZE_HOLD=1 (a subsystem whose freeze says {event:'freezing'} and waits for SIGUSR1,
 * at most 30 s, while the server still serves: after a successor got its fds early, before
 * the server freezes), ECHO_DIE_AT_SETTLE=1 (a successor that exits once it has the fds sent early),
 * ECHO_DIE_AT_AHEAD=1 (a successor that exits when asked to read memory ahead: after the
 * running image took its baseline, right before its freeze),
 * ECHO_FINISH_DELAY_MS (an updated image says {event:'restored'} and waits that long before
 * FINISH), ECHO_COUNT_FDS=0 (the ready line's otherFds is -1: counting the fds takes ~20 ms at
 * 10 000 connections, which a bench would measure), ECHO_LAG=1 (diagnosis: a luo-trace line
 * on stderr whenever the event loop stood still for more than 5 ms), ECHO_NODE_ARGS (node flags
 * for the next images, space-separated), ECHO_ADOPT_BATCH (restoreServer's batch: how many
 * idle connections a slice adopts at most), ECHO_ADOPT_SLICE_MS (restoreServer's sliceMs),
 * ECHO_ADOPT_COST_US (each adopted connection's handler runs this long: a heavy one),
 * ECHO_RESTORE_DELAY_MS (an updated image waits that long before restoreServer),
 * ECHO_RANK_FILE (a file holding a client port, read
 * at the restore: the 'ready' line says how many connections had been adopted before it,
 * rankOfPort).
 * The 'ready' line of an updated image says how many connections were adopted when the first
 * byte was read from one of them (adoptedAtFirstData) and when that was (firstReadAt, epoch
 * ms: its echo written already), and the most adopted between two reads while it restored
 * (maxAdoptedBetweenReads).
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
// Imported by package name, as a service would: the bundled build (dist/luo.js).
import { boot, connectionsOf, pendingHandover, preserveServer, restoreServer, State } from 'luo';
import * as sys from '../../src/sys/index.js';

export async function runEcho(version: 'a' | 'b'): Promise<void> {
  const t0 = process.hrtime.bigint();
  const marks: Array<[string, number]> = [];
  const mark = (what: string): void => void marks.push([what, Number(process.hrtime.bigint() - BigInt(process.env.ECHO_T_EXEC ?? String(t0))) / 1e6]);
  mark('modules loaded');
  const pending = pendingHandover(); // what boot() is about to find
  const luo = boot({
    arenaSize: 2 ** 30,
    ...(process.env.ECHO_DIE_AT_SETTLE === '1' ? { settle: () => process.exit(3) } : {}),
    ...(process.env.ECHO_DIE_AT_AHEAD === '1' ? { ahead: () => process.exit(3) } : {}),
  });
  mark('luo booted');
  const isHttp = process.env.ECHO_HTTP === '1';
  const server: net.Server = isHttp
    ? http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      req.resume();
      req.on('end', () => res.end(`${version}:${req.url}`));
    })
    : net.createServer((s) => {
      s.on('error', () => {});
      s.pipe(s);
      if (adoptedAtFirstData < 0 && luo.state === State.UPDATED) {
        s.once('data', () => {
          if (adoptedAtFirstData >= 0) return;
          adoptedAtFirstData = adopted;
          firstReadAt = performance.timeOrigin + performance.now(); // its echo is written already
        });
      }
      if (luo.state === State.UPDATED) {
        s.on('data', () => {
          // The most connections adopted between two reads (on any connection) while the
          // restore adopts: how long the adopted ones waited to be served again.
          if (readAt >= 0) maxAdoptedBetweenReads = Math.max(maxAdoptedBetweenReads, adopted - readAt);
          readAt = adopted;
        });
      }
    });
  let adopted = 0;
  let adoptedAtFirstData = -1;
  let firstReadAt = -1;
  let readAt = -1;
  let maxAdoptedBetweenReads = 0;
  const say = (o: Record<string, unknown>): void => void process.stdout.write(JSON.stringify(o) + '\n');
  // Reading /proc/self/fd takes ~20 ms at 10 000 connections: the bench, which measures the
  // service's pauses, does without (ECHO_COUNT_FDS=0).
  const otherFds = (): number => (process.env.ECHO_COUNT_FDS === '0' ? -1 : sys.openFds().length - connectionsOf(server).size);

  let restored = 0;
  const firstPorts: number[] = [];
  const rankPort = process.env.ECHO_RANK_FILE && fs.existsSync(process.env.ECHO_RANK_FILE) ? Number(fs.readFileSync(process.env.ECHO_RANK_FILE, 'utf8')) : -1;
  let rankOfPort = -1;
  const adoptCostMs = Number(process.env.ECHO_ADOPT_COST_US ?? 0) / 1000;
  let carried = { unread: 0, unsent: 0 };
  if (luo.state === State.UPDATED) {
    // Diagnosis and tests: the clients' bytes wait in the kernel meanwhile (every connection
    // that sends is busy at the restore).
    const delay = Number(process.env.ECHO_RESTORE_DELAY_MS ?? 0);
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const r = await restoreServer(luo, 1, server, {
      ...(process.env.ECHO_ADOPT_BATCH ? { batch: Number(process.env.ECHO_ADOPT_BATCH) } : {}),
      ...(process.env.ECHO_ADOPT_SLICE_MS ? { sliceMs: Number(process.env.ECHO_ADOPT_SLICE_MS) } : {}),
      onConnection: (s) => {
        for (const until = performance.now() + adoptCostMs; performance.now() < until;);
        if (s.remotePort === rankPort) rankOfPort = adopted;
        adopted++;
        if (marks.length < 4) mark('first connection adopted');
        if (firstPorts.length < 16) firstPorts.push(s.remotePort ?? 0);
      },
    });
    mark('all adopted');
    restored = r.connections;
    carried = { unread: r.unread, unsent: r.unsent };
  } else {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    say({ event: 'listening', port: (server.address() as net.AddressInfo).port, version, pid: process.pid });
  }
  if (process.env.ECHO_FREEZE_HOLD === '1') {
    // The listener is there from the start: a SIGUSR1 that finds none starts Node's inspector
    // instead (seen here: "Debugger listening", and the freeze waited out its timeout).
    let release: (() => void) | null = null;
    process.on('SIGUSR1', () => release?.());
    await luo.registerSubsystem({
      name: 'slow-freeze',
      freeze: async () => {
        await new Promise<void>((r) => {
          const t = setTimeout(r, 30_000);
          release = () => (clearTimeout(t), (release = null), r());
          say({ event: 'freezing', pid: process.pid });
        });
      },
    });
  }
  preserveServer(luo, 1, server, {
    drainTimeoutMs: Number(process.env.ECHO_DRAIN_MS ?? 2000),
    onUndrained: (process.env.ECHO_ON_UNDRAINED as 'carry' | 'fail') ?? 'carry',
  });
  // Signals first: a harness may signal as soon as it reads the ready line.
  process.on('SIGUSR2', () => {
    void (async () => {
      const ts = process.hrtime.bigint();
      const old: Array<[string, number]> = [];
      const omark = (w: string): void => void old.push([w, Number(process.hrtime.bigint() - ts) / 1e6]);
      try {
        await luo.prepare();
        omark('prepared');
        const next = process.env.ECHO_NEXT || path.join(path.dirname(fileURLToPath(import.meta.url)), `echo-${version === 'a' ? 'b' : 'a'}.js`);
        const nodeArgs = (process.env.ECHO_NODE_ARGS ?? '').split(' ').filter(Boolean);
        await luo.reboot({ file: process.execPath, argv: [process.execPath, ...nodeArgs, next] }, {
          successor: process.env.ECHO_SUCCESSOR === '1',
          successorTimeoutMs: Number(process.env.ECHO_SUCCESSOR_TIMEOUT_MS ?? 30_000),
          beforeExec: () => {
            omark('exec');
            process.env.ECHO_OLD_MARKS = JSON.stringify(old);
            process.env.ECHO_WALL_EXEC = String(performance.timeOrigin + performance.now());
            process.env.ECHO_T_EXEC = String(process.hrtime.bigint());
          },
        });
      } catch (e) {
        say({ event: 'update-failed', code: (e as { code?: string }).code, message: (e as Error).message, state: luo.stateName, version });
      }
    })();
  });
  process.on('SIGTERM', () => process.exit(0));
  if (process.env.ECHO_LAG === '1') {
    // Diagnosis: say when the event loop stood still for more than 5 ms (to stderr, as luo-trace).
    let last = performance.now();
    setInterval(() => {
      const now = performance.now();
      if (now - last > 5) process.stderr.write(`luo-trace ${process.pid} ${(performance.timeOrigin + last).toFixed(2)} LAG ${(now - last).toFixed(1)} ms\n`);
      last = now;
    }, 1).unref();
  }
  if (luo.state === State.UPDATED) {
    const finishDelay = Number(process.env.ECHO_FINISH_DELAY_MS ?? 0);
    if (finishDelay > 0) {
      say({ event: 'restored', pid: process.pid });
      await new Promise((r) => setTimeout(r, finishDelay));
    }
    await luo.finish();
    mark('finished');
    const bootMs = Number(process.hrtime.bigint() - BigInt(process.env.ECHO_T_EXEC ?? String(t0))) / 1e6;
    const nt = performance.nodeTiming;
    const execToOrigin = Number(BigInt(Math.round((performance.timeOrigin - Number(process.env.ECHO_WALL_EXEC ?? performance.timeOrigin)) * 1e3))) / 1e3;
    say({ event: 'ready', version, pid: process.pid, pending, restored, firstPorts, adoptedAtFirstData, firstReadAt, maxAdoptedBetweenReads, rankOfPort, ...carried, number: luo.liveupdateNumber, otherFds: otherFds(), bootMs, marks, node: { execToOrigin, bootstrapComplete: nt.bootstrapComplete, prev: process.env.ECHO_OLD_MARKS } });
  } else {
    say({ event: 'ready', version, pid: process.pid, pending, restored: 0, number: 0, otherFds: otherFds() });
  }

}
