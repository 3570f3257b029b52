/*
 * The luo.map / luo.keep service (test/images/state-service.ts) started and updated with the
 * real agent; each image is one generation and reports what it checked on its 'listening' line.
 */
import { cliPath, imagePath, runNode, type Run } from './helpers.js';
import { DropIn, repoRoot } from './dropin-harness.js';

export const stateImage = imagePath('state-service');

export function startState(env: NodeJS.ProcessEnv = {}, args: string[] = []): Promise<DropIn> {
  return DropIn.startImage(stateImage, args, env);
}

/** `luo update --json` to the state image with `args`; the agent's run and the next image's line. */
export async function updateState(svc: DropIn, opts: { successor?: boolean; args?: string[]; extra?: string[] } = {}): Promise<Run & { report: Record<string, any>; next: Record<string, any> | null }> {
  const before = svc.lines.length;
  const r = await runNode(cliPath, ['update', '--rundir', svc.rundir, '--json', '--timeout', '90', ...(opts.successor ? ['--successor'] : []), ...(opts.extra ?? []), '--', process.execPath, stateImage, ...(opts.args ?? [])], { cwd: repoRoot, timeoutMs: 180_000 });
  const last = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  const report = last ? (JSON.parse(last) as Record<string, any>) : {};
  const next = svc.lines.slice(before).filter((l) => l.event === 'listening').pop() ?? null;
  return { ...r, report, next };
}

/** The first line after index `from` matching `pred`. */
export function lineAfter(svc: DropIn, from: number, pred: (l: Record<string, any>) => boolean): Promise<Record<string, any>> {
  return svc.line((l) => svc.lines.indexOf(l) >= from && pred(l));
}
