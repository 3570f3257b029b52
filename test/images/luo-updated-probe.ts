/*
 * Probe image: generation 1 preserves tokens 1 and 2 (fds), registers subsystem "a" with a
 * payload, PREPAREs and reboots into itself. Generation 2 boots UPDATED and tries every
 * operation of the reference's tables there, printing {operation: result code} as JSON.
 */
import { boot, Event, State } from '../../src/index.js';
import * as sys from '../../src/sys/index.js';

const luo = boot({ arenaSize: 2 ** 28 });
const code = async (fn: () => unknown): Promise<string> => {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
};

if (luo.state !== State.UPDATED) {
  await luo.registerSubsystem({ name: 'a', prepare: () => 0x1234n });
  luo.preserveFile(1, sys.memfdCreate('one'));
  luo.preserveFile(2, sys.memfdCreate('two'));
  await luo.prepare();
  await luo.reboot({ file: process.execPath, argv: [process.execPath, process.argv[1]!] });
} else {
  const r: Record<string, string | number | boolean> = { state: luo.stateName };
  r.stateFile = (await import('node:fs')).readFileSync(luo.stateFilePath!, 'utf8');
  let booted = 0n;
  r.registerSubsystemBoot = await code(() => luo.registerSubsystem({ name: 'a', boot: (d) => void (booted = d) }));
  r.bootPayload = `0x${booted.toString(16)}`;
  r.getSubsystemData = `0x${luo.getSubsystemData('a').toString(16)}`;
  r.registerNewSubsystem = await code(() => luo.registerSubsystem({ name: 'new-in-this-version', boot: () => { throw new Error('must not be called'); } }));
  r.getDataOfNew = await code(() => luo.getSubsystemData('new-in-this-version'));
  r.unregisterSubsystem = await code(() => luo.unregisterSubsystem('new-in-this-version'));
  r.registerHandler = await code(() => luo.registerFileHandler({ compatible: 'probe-v1', canPreserve: () => false, retrieve: () => null }));
  r.unregisterHandler = await code(() => luo.unregisterFileHandler('probe-v1'));
  const fd = sys.memfdCreate('x');
  r.preserve = await code(() => luo.preserveFile(7, fd));
  r.unpreserveOutgoing = await code(() => luo.unpreserveFile(7));
  r.unpreserveIncoming = await code(() => luo.unpreserveFile(1)); // acts on the outgoing set only
  r.getFdStateIncomingBeforeRestore = await code(() => luo.getFdState(1, true)); // v3: not built yet
  r.finishFdBeforeRestore = await code(() => luo.setFdEvent(1, Event.FINISH));
  r.restore = await code(() => luo.restoreFile(1));
  r.restoreAgain = await code(() => luo.restoreFile(1));
  r.restoreUnknown = await code(() => luo.restoreFile(99));
  r.getFdStateIncoming = luo.getFdState(2, true);
  r.finishFd = await code(() => luo.setFdEvent(2, Event.FINISH));
  r.getFdStateAfterFinishFd = luo.getFdState(2, true);
  r.prepareInUpdated = await code(() => luo.prepare());
  r.cancelInUpdated = await code(() => luo.cancel());
  r.freezeEvent = await code(() => luo.setEvent(Event.FREEZE));
  r.finish = await code(() => luo.finish());
  r.afterFinish = luo.stateName;
  r.finishAgain = await code(() => luo.finish());
  r.restoreAfterFinish = await code(() => luo.restoreFile(2));
  r.number = luo.liveupdateNumber;
  console.log(JSON.stringify(r));
}
