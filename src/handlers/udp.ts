/*
 * handlers/udp: a bound dgram.Socket ("udp-v1"). At FREEZE receiving stops (datagrams that
 * arrive meanwhile wait in the kernel's buffer); on CANCEL it starts again. The fd is carried;
 * retrieve() returns a new dgram.Socket of the same type bound to it (Node adopts a datagram
 * fd with bind({ fd })). Datagrams are never buffered in userspace by Node, so nothing else
 * needs carrying.
 */
import type dgram from 'node:dgram';
import { dgramModule } from './builtins.js';
import type { FileHandler } from '../luo/file-handler.js';
import { udpHandleOf } from './node-internals.js';

export const udpHandler: FileHandler<dgram.Socket> = {
  compatible: 'udp-v1',
  canPreserve: (f) => typeof f === 'object' && f !== null && f instanceof dgramModule().Socket,
  attach(file) {
    udpHandleOf(file as dgram.Socket);
    return file as dgram.Socket;
  },
  prepare({ file }) {
    return file.address().family === 'IPv6' ? 6n : 4n;
  },
  freeze({ file }) {
    udpHandleOf(file).recvStop();
  },
  cancel({ file }) {
    udpHandleOf(file).recvStart();
  },
  snapshot: ({ file }) => ({ fds: [udpHandleOf(file).fd] }),
  retrieve({ data, fd }) {
    const sock = dgramModule().createSocket(data === 6n ? 'udp6' : 'udp4');
    return new Promise<dgram.Socket>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind({ fd: fd(0) }, () => {
        sock.off('error', reject);
        resolve(sock);
      });
    });
  },
};
