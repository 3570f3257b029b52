/*
 * handlers/ws-internals: the ONLY place luo reads the internals of the `ws` library (8.x).
 * test/ws-internals.test.ts fails loudly on a `ws` version where any of them changed.
 *
 * luo never imports `ws`: it finds a connection's WebSocket through the socket, so that the
 * application's own copy of `ws` (whatever its path) is the one read. What it relies on:
 *   socket[Symbol('websocket')]          setSocket() puts the WebSocket on its net.Socket
 *   websocket._receiver                  the frame parser (a Writable), whose state is what
 *     ._state, ._bufferedBytes,            was received and not yet delivered: the bytes not
 *     ._buffers, ._fin, ._opcode,          yet parsed, the header of the frame in progress and
 *     ._payloadLength, ._masked, ._mask,   the fragments of a message in progress. From them
 *     ._compressed, ._fragmented,          pendingInput() writes frames that a new parser reads
 *     ._fragments                          into exactly the same messages (ws has no public way
 *                                          to pause its parser mid-frame)
 *   websocket._sender._queue, ._state    frames not yet written (while compressing)
 *   websocket._extensions                negotiated extensions (permessage-deflate's params)
 *   websocket._protocol, readyState      negotiated subprotocol; OPEN / CLOSING
 *
 * Lifecycle (the server handler, handlers/server.ts, drives it): at FREEZE, once the socket no
 * longer reads, wait until every WebSocket is carryable (settled(): not inflating, no deferred
 * event, nothing queued to send; a WebSocket closing is waited for, and one still closing at
 * the deadline is not carried); at the snapshot, pendingInput() of each goes in front of the
 * socket's own unread bytes; verify compares fingerprint() (the parser must not have moved).
 * What cannot cross: a permessage-deflate context (it lives in zlib), so a connection that
 * negotiated context takeover is refused (carryable() says why).
 */
import type net from 'node:net';

const GET_INFO = 0;
const GET_PAYLOAD_LENGTH_16 = 1;
const GET_PAYLOAD_LENGTH_64 = 2;
const GET_MASK = 3;
const GET_DATA = 4;
const INFLATING = 5;
const DEFER_EVENT = 6;

export interface WsReceiver {
  _state: number;
  _bufferedBytes: number;
  _buffers: Buffer[];
  _fin: boolean;
  _opcode: number;
  _payloadLength: number;
  _masked: boolean;
  _mask: Buffer | undefined;
  _compressed: boolean;
  _fragmented: number;
  _fragments: Buffer[];
}

export interface WsWebSocket {
  readyState: number;
  _receiver: WsReceiver | null;
  _sender: { _queue: unknown[]; _state: number } | null;
  _extensions: Record<string, { params?: Record<string, unknown> | null } | undefined>;
  _protocol: string;
  _isServer: boolean;
}

const OPEN = 1;
const CLOSING = 2;

/** The ws WebSocket on a socket, or null (no ws connection). */
export function webSocketOf(s: net.Socket): WsWebSocket | null {
  for (const sym of Object.getOwnPropertySymbols(s)) {
    if (sym.description !== 'websocket') continue;
    const ws = (s as unknown as Record<symbol, unknown>)[sym] as WsWebSocket | undefined;
    if (ws && typeof ws === 'object' && '_receiver' in ws && '_sender' in ws) return ws;
  }
  return null;
}

/** Check that a WebSocket has the shape this adapter reads; the first field missing, else null. */
export function shapeProblem(ws: WsWebSocket): string | null {
  const r = ws._receiver;
  if (!r) return 'websocket._receiver';
  for (const f of ['_state', '_bufferedBytes', '_buffers', '_fin', '_opcode', '_payloadLength', '_masked', '_compressed', '_fragmented', '_fragments'] as const) {
    if (!(f in r)) return `websocket._receiver.${f}`;
  }
  if (!Array.isArray(r._buffers) || !Array.isArray(r._fragments)) return 'websocket._receiver._buffers/_fragments (arrays)';
  const s = ws._sender;
  if (!s || !Array.isArray(s._queue) || typeof s._state !== 'number') return 'websocket._sender._queue/_state';
  if (typeof ws._extensions !== 'object' || ws._extensions === null) return 'websocket._extensions';
  return null;
}

export const isOpen = (ws: WsWebSocket): boolean => ws.readyState === OPEN;
export const isClosing = (ws: WsWebSocket): boolean => ws.readyState === CLOSING;

/** Why this connection cannot cross an update at all (null: it can). */
export function carryable(ws: WsWebSocket): string | null {
  const shape = shapeProblem(ws);
  if (shape) return `this version of ws keeps its state elsewhere (${shape} is missing): handlers/ws-internals.ts needs updating`;
  if (!ws._isServer) return 'it is a ws client connection (luo carries the server side)';
  const pmd = ws._extensions['permessage-deflate'];
  if (pmd) {
    const p = pmd.params ?? {};
    if (!p.server_no_context_takeover || !p.client_no_context_takeover) {
      return 'it negotiated permessage-deflate with context takeover (the compression context lives in zlib and cannot cross): set perMessageDeflate { serverNoContextTakeover: true, clientNoContextTakeover: true }, or turn it off';
    }
  }
  return null;
}

/**
 * Whether the WebSocket is at a point where pendingInput() says everything: the parser is not
 * inflating or holding back an event, no half-received compressed fragmented message (its
 * inflater holds state), and the sender has nothing queued.
 */
export function settled(ws: WsWebSocket): boolean {
  const r = ws._receiver!;
  if (r._state === INFLATING || r._state === DEFER_EVENT) return false;
  if (r._fragmented && r._compressed) return false;
  const s = ws._sender!;
  return s._queue.length === 0 && s._state === 0;
}

/** The parser's position, to check that it did not move between a snapshot and its verify. */
export function fingerprint(ws: WsWebSocket): string {
  const r = ws._receiver!;
  return `${r._state}:${r._bufferedBytes}:${r._fragments.length}:${r._fragmented}:${r._payloadLength}`;
}

const ZERO_MASK = Buffer.alloc(4);

/** A frame header (client to server: masked). */
function header(fin: boolean, rsv1: boolean, opcode: number, length: number | null, mask: Buffer | null): Buffer {
  const b0 = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  if (length === null) return Buffer.from([b0]); // only the first byte is known to be consumed
  const ext = length > 0xffff ? 8 : length > 125 ? 2 : 0;
  const out = Buffer.alloc(2 + ext + (mask ? 4 : 0));
  out[0] = b0;
  out[1] = 0x80 | (ext === 8 ? 127 : ext === 2 ? 126 : length);
  if (ext === 2) out.writeUInt16BE(length, 2);
  else if (ext === 8) {
    out.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    out.writeUInt32BE(length % 2 ** 32, 6);
  }
  if (mask) mask.copy(out, 2 + ext);
  return out;
}

/**
 * The bytes a fresh server-side parser must read to end up where this one is: the fragments of
 * a message in progress as one unfinished frame (masked with a zero key, so its payload is the
 * payload), the frame in progress from its header as far as this parser consumed it, then the
 * bytes it has not parsed yet. Empty when the parser is between frames with nothing buffered
 * (the common case). Call only when settled().
 */
export function pendingInput(ws: WsWebSocket): Buffer {
  const r = ws._receiver!;
  const parts: Buffer[] = [];
  const inFrame = r._state === GET_PAYLOAD_LENGTH_16 || r._state === GET_PAYLOAD_LENGTH_64 || r._state === GET_MASK || r._state === GET_DATA;
  const dataFrame = inFrame && r._opcode < 0x08;
  const collected = r._fragments.length ? Buffer.concat(r._fragments) : null;
  // A fragmented message in progress: what it delivered so far, as its first frame.
  let continuation = false;
  if (r._fragmented && (collected || !dataFrame)) {
    const payload = collected ?? Buffer.alloc(0);
    parts.push(header(false, false, r._fragmented, payload.length, ZERO_MASK), payload);
    continuation = true;
  }
  if (inFrame) {
    // A data frame in progress: a continuation of the message above, or its first frame. The
    // parser replaced a continuation's opcode 0 with the message's; a control frame keeps its
    // own. RSV1 marks a compressed message's first frame (never a fragmented one: settled()).
    const opcode = dataFrame ? (continuation ? 0 : r._opcode) : r._opcode;
    const rsv1 = dataFrame && !continuation && r._compressed;
    if (r._state === GET_PAYLOAD_LENGTH_16 || r._state === GET_PAYLOAD_LENGTH_64) {
      // Consumed: the two header bytes (the length code is in _payloadLength: 126 or 127).
      parts.push(Buffer.from([(r._fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode, (r._masked ? 0x80 : 0) | r._payloadLength]));
    } else if (r._state === GET_MASK) {
      // Consumed: the header and the length; the mask is still buffered.
      const h = header(r._fin, rsv1, opcode, r._payloadLength, ZERO_MASK);
      parts.push(h.subarray(0, h.length - 4));
      if (!r._masked) parts[parts.length - 1]![1]! &= 0x7f;
    } else {
      // GET_DATA: the header, length and mask consumed; the payload is still buffered (the
      // parser waits for all of it).
      parts.push(header(r._fin, rsv1, opcode, r._payloadLength, r._masked ? (r._mask ?? ZERO_MASK) : null));
      if (!r._masked) parts[parts.length - 1]![1]! &= 0x7f;
    }
  }
  for (const b of r._buffers) parts.push(b);
  if (parts.length === 0) return Buffer.alloc(0);
  return Buffer.concat(parts);
}

/** The subprotocol the connection negotiated ('' for none). */
export function protocolOf(ws: WsWebSocket): string {
  return ws._protocol ?? '';
}

export { GET_INFO, GET_DATA };
