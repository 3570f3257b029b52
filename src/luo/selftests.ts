/*
 * luo/selftests: the kernel-side hooks v3's selftests rely on (luo_selftests.c), present only
 * when selftests are switched on (LUO_SELFTESTS=1; never in production).
 *
 *   freeze()                    LIVEUPDATE_IOCTL_FREEZE: FREEZE without a reboot.
 *   register(name, page)        LUO_CMD_SUBSYSTEM_REGISTER: a dummy subsystem holding a copy
 *                               of one page; 16 slots (ENOMEM when full).
 *   unregister(name)            LUO_CMD_SUBSYSTEM_UNREGISTER (EINVAL when unknown, as v3).
 *   getData(name)               LUO_CMD_SUBSYSTEM_GETDATA: the page as the subsystem holds it.
 *
 * Dummy subsystems: prepare copies the page into a preserved arena page and returns its
 * address; a name containing "ksft_prepare_fail" then fails with EAGAIN (after preserving, as
 * v3); cancel unpreserves; freeze and finish only log. In the next image a dummy registered
 * under the same name gets its page back from the handover (boot).
 */
import { fail } from '../errors.js';
import { PAGE_SIZE } from '../kho/index.js';
import type { Luo, Subsystem } from './luo.js';

export const MAX_SUBSYSTEMS = 16;
export const NAME_LENGTH = 32;

interface Dummy extends Subsystem { page: Uint8Array; addr: number }

export class Selftests {
  readonly #luo: Luo;
  readonly #slots = new Map<string, Dummy>();
  readonly log: string[] = [];

  constructor(luo: Luo) {
    if (!luo.config.selftests) throw fail('ENOTTY', 'selftest hooks are off (LUO_SELFTESTS=0)');
    this.#luo = luo;
  }

  freeze(): Promise<void> {
    return this.#luo.freezeForSelftest();
  }

  async register(name: string, page: Uint8Array): Promise<void> {
    if (name.length >= NAME_LENGTH) throw fail('EINVAL', `selftest name longer than ${NAME_LENGTH - 1}`);
    if (this.#slots.size >= MAX_SUBSYSTEMS) throw fail('ENOMEM', `all ${MAX_SUBSYSTEMS} selftest slots are in use`);
    const luo = this.#luo;
    const log = this.log;
    const d: Dummy = {
      name,
      page: new Uint8Array(PAGE_SIZE),
      addr: 0,
      prepare() {
        d.addr = luo.allocPreserve(PAGE_SIZE);
        luo.view(d.addr, PAGE_SIZE).set(d.page);
        log.push(`${name}: prepare at ${d.addr}`);
        if (name.includes('ksft_prepare_fail')) throw fail('EAGAIN', `${name} fails prepare on purpose`);
        return d.addr;
      },
      freeze(data) {
        log.push(`${name}: freeze ${data}`);
      },
      cancel(data) {
        log.push(`${name}: cancel ${data}`);
        if (d.addr) luo.unpreserveFree(d.addr, PAGE_SIZE);
        d.addr = 0;
      },
      boot(data) {
        const addr = Number(data);
        if (addr) {
          luo.restoreMemory(addr);
          d.page.set(luo.view(addr, PAGE_SIZE));
          d.addr = addr;
        }
        log.push(`${name}: boot ${data}`);
      },
      finish(data) {
        log.push(`${name}: finish ${data}`);
        if (d.addr) luo.kho.free(d.addr, PAGE_SIZE);
        d.addr = 0;
      },
    };
    d.page.set(page.subarray(0, PAGE_SIZE));
    if (this.#slots.has(name)) throw fail('EEXIST', `selftest subsystem "${name}" exists`);
    await luo.registerSubsystem(d);
    this.#slots.set(name, d);
  }

  unregister(name: string): void {
    const d = this.#slots.get(name);
    if (!d) throw fail('EINVAL', `no selftest subsystem "${name}"`);
    this.#luo.unregisterSubsystem(d);
    this.#slots.delete(name);
  }

  getData(name: string): Uint8Array {
    const d = this.#slots.get(name);
    if (!d) throw fail('EINVAL', `no selftest subsystem "${name}"`);
    return d.addr ? this.#luo.view(d.addr, PAGE_SIZE).slice() : d.page.slice();
  }
}
