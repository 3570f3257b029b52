/*
 * handlers/builtins: Node modules the handlers need only to recognise objects (http, dgram),
 * loaded on first use. (TLS is recognised without loading node:tls: handlers/tls.ts.)
 */
import { createRequire } from 'node:module';

const req = createRequire(import.meta.url);
export const netModule = (): typeof import('node:net') => req('node:net') as typeof import('node:net');
export const httpModule = (): typeof import('node:http') => req('node:http') as typeof import('node:http');
export const dgramModule = (): typeof import('node:dgram') => req('node:dgram') as typeof import('node:dgram');
