/*
 * examples/kv/ws: the WebSocket wire format (RFC 6455), just what the example needs: the
 * opening handshake's accept key, frame encoding, and an incremental frame parser.
 *
 * Why not a library: a live update hands a connection over at a frame boundary, which needs
 * the parser's unconsumed bytes (`pending()`) and its exact position; the usual libraries keep
 * both private.
 *
 * Lifecycle of a FrameParser: push(bytes) any number of times → complete frames come out in
 * order; `pending()` is what has been received but not yet formed a frame (carried across an
 * update and pushed first into the next image's parser). Unhappy paths: a frame that breaks
 * the protocol (reserved bits, unknown opcode, an unmasked client frame, a fragmented or
 * oversized control frame, a payload over the limit) throws WsProtocolError with the close
 * code to send (1002 or 1009); the parser is then unusable.
 */
import crypto from 'node:crypto';

export const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 } as const;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export class WsProtocolError extends Error {
  constructor(readonly closeCode: number, message: string) {
    super(message);
  }
}

export function acceptKey(key: string): string {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

export interface Frame { fin: boolean; opcode: number; payload: Buffer }

/** One frame; masked when `mask` is given (clients must mask, servers must not). */
export function encodeFrame(opcode: number, payload: Uint8Array, mask?: Buffer, fin = true): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = 2 + ext + (mask ? 4 : 0);
  const out = Buffer.allocUnsafe(head + len);
  out[0] = (fin ? 0x80 : 0) | opcode;
  out[1] = (mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) out.writeUInt16BE(len, 2);
  else if (ext === 8) out.writeBigUInt64BE(BigInt(len), 2);
  if (mask) {
    mask.copy(out, 2 + ext);
    for (let i = 0; i < len; i++) out[head + i] = payload[i]! ^ mask[i & 3]!;
  } else out.set(payload, head);
  return out;
}

export class FrameParser {
  #buf: Buffer = Buffer.alloc(0);
  readonly #expectMasked: boolean;
  readonly #maxPayload: number;

  /** `expectMasked`: true on the server side (client frames are masked). */
  constructor(expectMasked: boolean, maxPayload = 1 << 20) {
    this.#expectMasked = expectMasked;
    this.#maxPayload = maxPayload;
  }

  /** Add received bytes; returns the frames they complete. */
  push(chunk: Uint8Array): Frame[] {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : Buffer.from(chunk);
    const frames: Frame[] = [];
    for (;;) {
      const f = this.#one();
      if (!f) break;
      frames.push(f);
    }
    return frames;
  }

  /** Bytes received that do not yet make a frame. */
  pending(): Buffer {
    return Buffer.from(this.#buf);
  }

  #one(): Frame | null {
    const b = this.#buf;
    if (b.length < 2) return null;
    const fin = (b[0]! & 0x80) !== 0;
    if (b[0]! & 0x70) throw new WsProtocolError(1002, 'reserved bits set (no extension was negotiated)');
    const opcode = b[0]! & 0x0f;
    if (![0, 1, 2, 8, 9, 10].includes(opcode)) throw new WsProtocolError(1002, `unknown opcode ${opcode}`);
    const masked = (b[1]! & 0x80) !== 0;
    if (masked !== this.#expectMasked) throw new WsProtocolError(1002, masked ? 'server frames must not be masked' : 'client frames must be masked');
    let len = b[1]! & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return null;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return null;
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(this.#maxPayload)) throw new WsProtocolError(1009, `frame of ${big} bytes is over the ${this.#maxPayload}-byte limit`);
      len = Number(big);
      off = 10;
    }
    if (opcode >= 8 && (len > 125 || !fin)) throw new WsProtocolError(1002, 'control frames must be whole and at most 125 bytes');
    if (len > this.#maxPayload) throw new WsProtocolError(1009, `frame of ${len} bytes is over the ${this.#maxPayload}-byte limit`);
    const maskOff = off;
    if (masked) off += 4;
    if (b.length < off + len) return null;
    const payload = Buffer.from(b.subarray(off, off + len));
    if (masked) for (let i = 0; i < len; i++) payload[i]! ^= b[maskOff + (i & 3)]!;
    this.#buf = b.subarray(off + len);
    return { fin, opcode, payload };
  }
}

/** Reassembles fragmented messages from frames; control frames pass through. */
export class MessageAssembler {
  #parts: Buffer[] = [];
  #opcode = 0;

  /** Returns a complete message, a control frame, or null while a message is incomplete. */
  add(f: Frame): { opcode: number; data: Buffer } | null {
    if (f.opcode >= 8) return { opcode: f.opcode, data: f.payload };
    if (f.opcode !== OP.CONT) {
      if (this.#parts.length) throw new WsProtocolError(1002, 'a new message began inside a fragmented one');
      this.#opcode = f.opcode;
    } else if (!this.#parts.length && !this.#opcode) throw new WsProtocolError(1002, 'continuation frame without a message');
    this.#parts.push(f.payload);
    if (!f.fin) return null;
    const data = Buffer.concat(this.#parts);
    const opcode = this.#opcode;
    this.#parts = [];
    this.#opcode = 0;
    return { opcode, data };
  }

  /** Fragments received of a message not yet complete (carried with the parser's pending bytes). */
  get partial(): { opcode: number; parts: Buffer[] } {
    return { opcode: this.#opcode, parts: this.#parts };
  }

  restore(p: { opcode: number; parts: Buffer[] }): void {
    this.#opcode = p.opcode;
    this.#parts = p.parts;
  }
}
