// Declarations for bester-client: the client and handler halves; the protocol core is
// ./lib/protocol.d.ts (re-exported here).

import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { ConnectionOptions } from 'node:tls';
import type {
  AnswerFrame,
  Authentication,
  BesterError,
  BesterUrl,
  BrokerFrame,
  From,
  HandlerRequestFrame,
  Json,
  LoginData,
  LoginRequestFrame,
  OkReply,
  Push,
  ReportFrame,
  ServerFrame,
  ServerReport,
} from './lib/protocol.js';

export * from './lib/protocol.js';

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/** An ed25519 private key: a KeyObject, PKCS#8 PEM, or its 32-byte seed. */
export type KeyLike = KeyObject | string | Uint8Array;

export interface Credentials {
  /** Default: the URL's user. */
  username?: string;
  /** Default: the URL's password (unless another credential is given). */
  password?: string;
  /** A JWT the application issued, or a `v1.` resume token: `{token}`. */
  token?: string;
  /** A resume token from an earlier session: `{resume}`. */
  resume?: string;
  /** ed25519 key login (challenge signed with node:crypto). */
  key?: KeyLike;
  /** Key login: sign only a challenge from the server of this name. */
  serverName?: string;
  /** An auth handler's own shape, sent as it is (e.g. `{apiKey}`). */
  authentication?: Authentication;
}

export interface ConnectOptions extends Credentials {
  /** bester+tls://, bester+wss://: the CA certificates to trust (PEM). Default: the system's. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** More node:tls options (a client certificate, …). */
  tls?: ConnectionOptions;
  /** Default timeout of a request, ms (60000; 0: none). */
  timeout?: number;
  /** To connect and log in, ms (10000). */
  connectTimeout?: number;
  /** Send bester.ping after this long without sending, ms (30000; 0: never). */
  keepalive?: number;
  /** Reconnect after a lost connection (true). */
  reconnect?: boolean;
  /** First reconnect delay, doubling (jittered) to maxBackoff, ms (100, 10000). */
  backoff?: number;
  maxBackoff?: number;
  /** Pushes kept for the iterator when nobody reads them (10000; the oldest dropped). */
  maxPushes?: number;
  /** Largest frame accepted from the server (16 MiB). */
  maxFrame?: number;
  onPush?: (push: Push) => void;
  /**
   * Acknowledge stored pushes (those with `msg`) once taken: after the 'push' listeners ran, or
   * when the iterator hands one out; one `bester.ack` per turn (true). false: call ack().
   */
  autoAck?: boolean;
  /** How many `msg` ids are remembered to drop a copy that comes again (4096). */
  maxSeen?: number;
  /**
   * Offer `compress` at every login (false). Where the server accepts it (TCP and TLS, never
   * WebSocket) frames of 256 bytes or more may go compressed both ways; `bester.*` requests never
   * are (they carry secrets).
   */
  compress?: boolean;
}

/** The session's limits, as the identify reply names them when features were offered. */
export interface SessionLimits {
  max_frame_bytes?: number;
  max_in_flight?: number;
  idle_timeout_ms?: number;
  [name: string]: Json | undefined;
}

export interface RequestOptions {
  /** ms; rejects with `timeout` (the request may still be handled). */
  timeout?: number;
}

export interface ClientEvents {
  connect: [data: LoginData];
  disconnect: [error: Error];
  push: [push: Push];
  redirect: [hop: { from: string; to: string }];
  close: [error: BesterError | null];
  /** The server refused an automatic `bester.ack`. */
  ackError: [error: BesterError];
}

export declare class Client extends EventEmitter {
  constructor(url: string, options?: ConnectOptions);
  readonly user: string | null;
  readonly server: string | null;
  readonly connected: boolean;
  /** The URL connected to now, without credentials. */
  readonly url: string;
  /** How many times it has logged in (1 after connect()). */
  readonly connections: number;
  /** The features the server accepted at the last login (`data.features`). */
  readonly features: string[];
  /** The session's limits named at the last login (empty when nothing was offered). */
  readonly limits: SessionLimits;
  connect(): Promise<this>;
  /** Resolves with the reply's data; rejects with the typed BesterError. */
  request<T = Json>(type: string, data?: Json, options?: RequestOptions): Promise<T>;
  /** Resolves with the whole reply frame (delivered, offline, servers, …). */
  requestFrame(type: string, data?: Json, options?: RequestOptions): Promise<OkReply>;
  ping(options?: RequestOptions): Promise<'pong'>;
  whoami(options?: RequestOptions): Promise<{ user: string; server: string; connections: number; handlers: { [type: string]: number }; peers: string[] }>;
  logout(): Promise<{ user: string; server: string }>;
  close(): void;
  /** The next push, or null once the client is closed. */
  nextPush(): Promise<Push | null>;
  pushes(): AsyncGenerator<Push, void, undefined>;
  /** `bester.ack` for stored pushes (or their `msg` ids); resolves with how many were deleted. */
  ack(...msgs: Array<Push | string>): Promise<number>;
  [Symbol.asyncIterator](): AsyncGenerator<Push, void, undefined>;
  on<E extends keyof ClientEvents>(event: E, listener: (...args: ClientEvents[E]) => void): this;
  once<E extends keyof ClientEvents>(event: E, listener: (...args: ClientEvents[E]) => void): this;
}

/** Connect to `url` and log in; rejects with the typed refusal (AuthFailed, TokenExpired, …). */
export declare function connect(url: string, options?: ConnectOptions): Promise<Client>;
export declare function loadKey(key: KeyLike): KeyObject;
/** base64 of the 32-byte public key, as identify names it. */
export declare function publicKeyOf(key: KeyObject): string;

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

export declare const MAX_INCOMING: number;
export declare class Link extends EventEmitter {
  send(value: unknown): void;
  close(): void;
  destroy(error?: Error): void;
  readonly closed: boolean;
  on(event: 'frame', listener: (frame: ServerFrame) => void): this;
  on(event: 'close', listener: (error: Error | null) => void): this;
}
export declare function open(url: BesterUrl, options?: ConnectOptions): Promise<Link>;

// ---------------------------------------------------------------------------------------------
// Handler
// ---------------------------------------------------------------------------------------------

export declare class Answer {
  constructor(frame: AnswerFrame);
  readonly frame: AnswerFrame;
}

export declare class Request {
  constructor(raw: HandlerRequestFrame);
  readonly raw: HandlerRequestFrame;
  /** The broker's request token (echoed for you). */
  readonly token: string;
  readonly type: string;
  readonly data: Json;
  readonly scope: 'client' | 'server';
  readonly from: From;
  readonly via: string[];
  readonly user: string | null;
  readonly server: string | null;
  /** The session's authorisation data (a JWT's info, or an auth handler's), or null. */
  readonly info: { [key: string]: Json } | null;
  reply(data?: Json, type?: string): Answer;
  error(code: string, text: string): Answer;
  sendClients(users: Iterable<string>, data?: Json, type?: string): Answer;
  sendServers(servers: Iterable<string>, data?: Json, type?: string): Answer;
  sendHandler(type: string, data?: Json): Answer;
  /** Send the client elsewhere; token: yours (≤ 8 KiB), "mint" (the broker signs a resume token), or none. */
  redirect(url: string, token?: string | 'mint' | null): Answer;
}

export declare class LoginRequest {
  constructor(raw: LoginRequestFrame);
  readonly raw: LoginRequestFrame;
  readonly token: string;
  readonly type: 'bester.login';
  /** What the client sent as authentication. */
  readonly authentication: { [field: string]: Json };
  /** "ip:port". */
  readonly address: string | null;
  readonly listener: string | null;
  readonly transport: string | null;
  accept(user: string, info?: { [key: string]: Json }): Answer;
  refuse(code: string, text: string): Answer;
}

export declare class Report {
  constructor(frame: ReportFrame);
  readonly status: 'ok' | 'error';
  readonly delivered: string[];
  readonly offline: string[];
  readonly servers: { [server: string]: ServerReport };
  readonly code: string | null;
  readonly text: string | null;
  readonly frame: ReportFrame;
}

type Awaitable<T> = T | Promise<T>;
/** A value (the reply's data) or an Answer; throwing a BesterError answers with its code. */
export type RequestFunction = (request: Request) => Awaitable<Json | Answer | undefined | void>;
/** A user name, {user, info}, or an Answer; throwing a BesterError refuses the login. */
export type LoginFunction = (login: LoginRequest) => Awaitable<string | { user: string; info?: { [key: string]: Json } } | Answer>;

export interface HandlerOptions {
  /** Default: $BESTER_SOCKET. */
  path?: string;
  /** `connect = "/path"`: listen there, besterd dials per request. */
  listen?: boolean;
  maxFrame?: number;
  /** Exit 0 when the broker closes the socket (true); false: run() resolves instead. */
  exitOnClose?: boolean;
}

export declare class Handler {
  constructor(options?: HandlerOptions);
  /** Serve `type` with `fn` ('*': every type without its own). */
  on(type: string, fn: RequestFunction): this;
  /** Serve an auth handler's kind:"login" requests. */
  login(fn: LoginFunction): this;
  /** Push to users; resolves with the broker's report. */
  push(users: Iterable<string>, type: string, data?: Json): Promise<Report>;
  /** Push to peer servers; the report's `servers`. */
  pushServers(servers: Iterable<string>, type: string, data?: Json): Promise<Report>;
  /** The answer to one frame from the broker (no socket), or null. */
  respond(frame: BrokerFrame): Promise<AnswerFrame | null>;
  run(): Promise<void>;
}

export declare const log: {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};
