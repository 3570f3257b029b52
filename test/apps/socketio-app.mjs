// An unmodified socket.io app: nothing of luo's in it. A client joins the room its handshake
// names; 'req' is acknowledged with what the server knows of the socket; 'shout' goes to the
// room. /admin is a second namespace. A connection state recovery (socket.recovered: a
// carried socket says it too) skips the welcome.
import http from 'node:http';
import { Server } from 'socket.io';

const version = process.argv[2] ?? 'v1';
const server = http.createServer((req, res) => res.end(`${version}\n`));
const io = new Server(server);
io.on('connection', (socket) => {
  const room = `room-${socket.handshake.query.room}`;
  if (!socket.recovered) {
    socket.join(room);
    socket.data.first = version;
    socket.emit('welcome', { id: socket.id, v: version });
  }
  socket.on('req', (msg, ack) => ack({ seq: msg.seq, v: version, id: socket.id, rooms: [...socket.rooms].sort(), auth: socket.handshake.auth, first: socket.data.first }));
  socket.on('shout', (msg) => io.to(room).emit('shouted', { ...msg, v: version }));
});
io.of('/admin').on('connection', (socket) => socket.on('who', (ack) => ack({ v: version, id: socket.id })));
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', port: server.address().port, v: version, pid: process.pid }));
});
