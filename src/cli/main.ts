#!/usr/bin/env node
/*
 * cli/main: the `luo` agent. Each command is a function returning an exit code; errors are
 * printed as one line ("luo: <code>: <cause>"), never a stack trace.
 *
 * Exit codes: 0 success, 1 the operation failed (the service answered with an error),
 * 2 usage error, 3 the input file is malformed.
 */
import fs from 'node:fs';
import { LuoError } from '../errors.js';
import { decode, toDts } from '../fdt/index.js';

const USAGE = `usage: luo <command> [args]

  dump FILE.dtb      print a device-tree blob as DTS source (dtc accepts it)
  help               this text
`;

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, MALFORMED: 3 } as const;

class UsageError extends Error {}

function dump(args: string[]): number {
  const file = args[0];
  if (!file || args.length > 1) throw new UsageError('dump takes one FILE.dtb');
  let blob: Buffer;
  try {
    blob = fs.readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(`luo: ${err.code ?? 'EIO'}: cannot read ${file}\n`);
    return EXIT.FAILED;
  }
  process.stdout.write(toDts(decode(new Uint8Array(blob.buffer, blob.byteOffset, blob.length))));
  return EXIT.OK;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'dump':
        return dump(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return cmd === undefined ? EXIT.USAGE : EXIT.OK;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`luo: ${e.message}\n${USAGE}`);
      return EXIT.USAGE;
    }
    if (e instanceof LuoError) {
      process.stderr.write(`luo: ${e.message}\n`);
      return e.code === 'ERR_FDT' || e.code === 'ERR_DTS' ? EXIT.MALFORMED : EXIT.FAILED;
    }
    process.stderr.write(`luo: ${(e as Error).message ?? String(e)}\n`);
    return EXIT.FAILED;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
