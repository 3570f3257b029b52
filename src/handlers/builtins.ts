/*
 * handlers/builtins: Node modules the handlers need only to recognise objects (tls, http,
 * dgram), loaded on first use. A service that has such an object has loaded the module
 * already, so the check costs nothing; a service that has not never pays for loading it.
 */
import { createRequire } from 'node:module';

const req = createRequire(import.meta.url);
export const tlsModule = (): typeof import('node:tls') => req('node:tls') as typeof import('node:tls');
export const netModule = (): typeof import('node:net') => req('node:net') as typeof import('node:net');
export const httpModule = (): typeof import('node:http') => req('node:http') as typeof import('node:http');
export const dgramModule = (): typeof import('node:dgram') => req('node:dgram') as typeof import('node:dgram');
