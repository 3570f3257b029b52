/*
 * uapi/crc: the checksum the formats between images use: CRC-32 (zlib's, native) of a block
 * with its own 4-byte checksum field counted as zero, so that any flipped byte is seen and the
 * field can live inside what it covers. Pure.
 */
import zlib from 'node:zlib';

const ZERO_WORD = new Uint8Array(4);

/** CRC-32 of `v` with the 4 bytes at `field` counted as zero. */
export function crc32Skipping(v: Uint8Array, field: number): number {
  let c = zlib.crc32(v.subarray(0, field));
  c = zlib.crc32(ZERO_WORD, c);
  return zlib.crc32(v.subarray(field + 4), c) >>> 0;
}
