// bester-client: the besterd client and handler library for Node (no dependencies).
// The protocol core (lib/protocol.js) has no I/O and runs in browsers too.
export * from './lib/protocol.js';
export { Client, connect, loadKey, publicKeyOf } from './lib/client.js';
export { Answer, Handler, LoginRequest, Report, Request, log } from './lib/handler.js';
export { Link, MAX_INCOMING, open } from './lib/transport.js';
