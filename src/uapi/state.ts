/*
 * uapi/state: the layouts luo.map and luo.keep leave in preserved memory for the next version
 * (src/state). Pure: constants and small codecs, no I/O. Every multi-byte field is
 * little-endian; addresses are arena addresses, stored as f64 (exact below 2^53).
 *
 * The directory (one block, its address the "luo-state" subsystem's payload):
 *   u32 magic "LUSD" · u32 layout (1) · u32 count · u32 crc32 (of the block, this field 0)
 *   then `count` entries of DIR_ENTRY bytes:
 *     u8 kind (1 map, 2 keep) · u8 name length · u16 0 · u32 user version · f64 address ·
 *     f64 size (a map: its header block's; a keep: the serialized bytes) · name (≤ 63 bytes,
 *     zero-padded)
 *
 * A map's header (MAP_HEADER bytes, one block):
 *   u32[0] magic "LUOM" · u32[1] layout (1) · u32[2] crc32 (of the header, this field 0;
 *   written at FREEZE, checked when the next version opens it) · u32[3] user version ·
 *   u32[4] entries · u32[5] tombstones · u32[6] index capacity (slots, a power of two) ·
 *   u32[7] segments · f64 at 32: index address · f64 at 40: bytes in live entries ·
 *   u32[12] the hash seed (random per map: FNV-1a from it, then murmur3's finalizer) ·
 *   at 64: MAX_SEGMENTS × { f64 address, f64 size, f64 used } · at FREE_HEADS: FREE_CLASSES ×
 *   u32 free-list head (an entry reference, 0 none)
 * The index: capacity × { u32 hash, u32 entry reference } (reference 0: empty, TOMBSTONE:
 *   deleted). A reference is segment << 26 | offset >> 4 (entries are 16-byte aligned).
 * An entry (16-byte aligned, `cap` bytes, a size class's):
 *   u32 cap · u32 key length | key kind in bits 30-31 (0 one byte per char, 1 two bytes per
 *   char little-endian, 2 bytes) · u32 value length · u8 value type · 3 bytes 0 ·
 *   key · zero padding to 8 · value
 * A free block: u32 cap · u32 next free reference.
 */

export const STATE_SUBSYSTEM = 'luo-state';

export const DIR_MAGIC = 0x4453554c; // "LUSD"
export const DIR_LAYOUT = 1;
export const DIR_HEAD = 16;
export const DIR_ENTRY = 88;
export const NAME_MAX = 63;
export const KIND_MAP = 1;
export const KIND_KEEP = 2;

export const MAP_MAGIC = 0x4d4f554c; // "LUOM"
export const MAP_LAYOUT = 1;
export const MAP_HEADER = 4096;
export const SEG_TABLE = 64;
/** 63, not 64: segment 63's last reference would be TOMBSTONE. The table has room for 64. */
export const MAX_SEGMENTS = 63;
export const FREE_HEADS = SEG_TABLE + 64 * 24; // 1600
/** Size classes: 16-byte steps up to 4 KiB (256 of them), then powers of two up to 1 GiB. */
export const SMALL_CLASSES = 256;
export const FREE_CLASSES = SMALL_CLASSES + 19;

export const ENTRY_HEAD = 16;
export const SEG_SHIFT = 26;
export const OFF_MASK = (1 << SEG_SHIFT) - 1;
/** The largest segment: 2^26 references of 16 bytes. */
export const SEGMENT_MAX = 2 ** 30;
export const TOMBSTONE = 0xffffffff;

export const KEY_ONE_BYTE = 0;
export const KEY_TWO_BYTE = 1;
export const KEY_BYTES = 2;
export const KEY_LEN_MASK = 0x3fffffff;

export const VAL_STRING = 1;
export const VAL_ASCII = 2;
export const VAL_BYTES = 3;
export const VAL_NUMBER = 4;
export const VAL_JSON = 5;
export const VAL_UNDEFINED = 6;

/** The size class of a block of `cap` bytes (cap: a class size, from capFor). */
export function classOf(cap: number): number {
  return cap <= 4096 ? (cap >> 4) - 1 : SMALL_CLASSES + Math.log2(cap) - 13;
}

/** The block size that holds `need` bytes: 16-byte steps to 4 KiB, then a power of two. */
export function capFor(need: number): number {
  if (need <= 4096) return (need + 15) & ~15;
  return 2 ** Math.ceil(Math.log2(need));
}
