// Declarations for protocol.js: every frame of protocol/PROTOCOL.md and every error code.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

// ---------------------------------------------------------------------------------------------
// Error codes
// ---------------------------------------------------------------------------------------------

/** Every error code a server sends (PROTOCOL.md §8). */
export type ServerErrorCode =
  | 'frame_too_large'
  | 'invalid_utf8'
  | 'invalid_json'
  | 'invalid_message'
  | 'unknown_scope'
  | 'not_identified'
  | 'already_identified'
  | 'bad_identify_type'
  | 'auth_failed'
  | 'identify_timeout'
  | 'idle_timeout'
  | 'rate_limited'
  | 'too_many_connections'
  | 'unknown_type'
  | 'reserved_type'
  | 'handler_not_running'
  | 'handler_unavailable'
  | 'handler_timeout'
  | 'handler_busy'
  | 'handler_error'
  | 'bad_handler_reply'
  | 'handler_loop'
  | 'chain_too_deep'
  | 'unknown_peer'
  | 'peer_unreachable'
  | 'peer_unavailable'
  | 'peer_timeout'
  | 'hop_limit'
  | 'forged_origin'
  | 'server_busy'
  | 'slow_consumer'
  | 'shutting_down'
  | 'session_revoked'
  | 'kicked'
  | 'redirected'
  | 'token_logins_off'
  | 'token_malformed'
  | 'token_unknown_key'
  | 'token_bad_signature'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'token_wrong_audience'
  | 'token_wrong_issuer'
  | 'resume_expired'
  | 'resume_refused'
  | 'session_expired'
  | 'forbidden'
  | 'limit_reached'
  | 'queue_full'
  | 'store_failed'
  | 'dial_refused'
  | 'dial_offline'
  | 'dial_timeout'
  | 'dial_answered'
  | 'unknown_stream'
  | 'stream_credit_exceeded'
  | 'stream_closed'
  | 'internal_error';

/** Codes the library itself raises (never sent by a server). */
export type ClientErrorCode = 'timeout' | 'connection_lost' | 'closed' | 'redirect_refused' | 'too_many_redirects' | 'protocol_error';

/** Every code this library knows; a handler's own codes are any other string. */
export type ErrorCodeName = ServerErrorCode | ClientErrorCode;

/** Every code by its name in capitals. */
export declare const ErrorCode: { readonly [K in ErrorCodeName as Uppercase<K>]: K };

/** An error frame's data. */
export interface ErrorData {
  error: string;
  code: ErrorCodeName | (string & {});
  /** handler_error: the handler's numeric status. */
  status?: string;
}

export declare class BesterError extends Error {
  constructor(code: string, text: string, frame?: ServerFrame);
  /** besterd's stable snake_case code, or a handler's own. */
  readonly code: ErrorCodeName | (string & {});
  /** For people. */
  readonly text: string;
  /** The error frame, when there is one. */
  readonly frame?: ServerFrame;
  /** The error frame's whole data. */
  readonly data: ErrorData | undefined;
}

type Coded<C extends string> = { readonly code: C };

export declare class FrameError extends BesterError {}
export declare class MessageError extends BesterError {}
export declare class AuthError extends BesterError {}
export declare class TokenError extends AuthError {}
export declare class ResumeError extends AuthError {}
export declare class SessionEnded extends BesterError {}
export declare class HandlerFailed extends BesterError {}
export declare class PeerError extends BesterError {}
export declare class ServerError extends BesterError {}
export declare class ClientError extends BesterError {}

/** One class per code. */
export declare const errors: {
  readonly FrameTooLarge: new (code: string, text: string, frame?: ServerFrame) => FrameError & Coded<'frame_too_large'>;
  readonly InvalidUtf8: new (code: string, text: string, frame?: ServerFrame) => FrameError & Coded<'invalid_utf8'>;
  readonly InvalidJson: new (code: string, text: string, frame?: ServerFrame) => FrameError & Coded<'invalid_json'>;
  readonly InvalidMessage: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'invalid_message'>;
  readonly UnknownScope: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'unknown_scope'>;
  readonly NotIdentified: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'not_identified'>;
  readonly AlreadyIdentified: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'already_identified'>;
  readonly BadIdentifyType: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'bad_identify_type'>;
  readonly AuthFailed: new (code: string, text: string, frame?: ServerFrame) => AuthError & Coded<'auth_failed'>;
  readonly IdentifyTimeout: new (code: string, text: string, frame?: ServerFrame) => AuthError & Coded<'identify_timeout'>;
  readonly IdleTimeout: new (code: string, text: string, frame?: ServerFrame) => SessionEnded & Coded<'idle_timeout'>;
  readonly RateLimited: new (code: string, text: string, frame?: ServerFrame) => AuthError & Coded<'rate_limited'>;
  readonly TooManyConnections: new (code: string, text: string, frame?: ServerFrame) => ServerError & Coded<'too_many_connections'>;
  readonly UnknownType: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'unknown_type'>;
  readonly ReservedType: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'reserved_type'>;
  readonly HandlerNotRunning: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'handler_not_running'>;
  readonly HandlerUnavailable: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'handler_unavailable'>;
  readonly HandlerTimeout: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'handler_timeout'>;
  readonly HandlerBusy: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'handler_busy'>;
  readonly HandlerError: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'handler_error'>;
  readonly BadHandlerReply: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'bad_handler_reply'>;
  readonly HandlerLoop: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'handler_loop'>;
  readonly ChainTooDeep: new (code: string, text: string, frame?: ServerFrame) => HandlerFailed & Coded<'chain_too_deep'>;
  readonly UnknownPeer: new (code: string, text: string, frame?: ServerFrame) => PeerError & Coded<'unknown_peer'>;
  readonly PeerUnreachable: new (code: string, text: string, frame?: ServerFrame) => PeerError & Coded<'peer_unreachable'>;
  readonly PeerUnavailable: new (code: string, text: string, frame?: ServerFrame) => PeerError & Coded<'peer_unavailable'>;
  readonly PeerTimeout: new (code: string, text: string, frame?: ServerFrame) => PeerError & Coded<'peer_timeout'>;
  readonly HopLimit: new (code: string, text: string, frame?: ServerFrame) => PeerError & Coded<'hop_limit'>;
  readonly ForgedOrigin: new (code: string, text: string, frame?: ServerFrame) => PeerError & Coded<'forged_origin'>;
  readonly ServerBusy: new (code: string, text: string, frame?: ServerFrame) => ServerError & Coded<'server_busy'>;
  readonly SlowConsumer: new (code: string, text: string, frame?: ServerFrame) => ServerError & Coded<'slow_consumer'>;
  readonly ShuttingDown: new (code: string, text: string, frame?: ServerFrame) => SessionEnded & Coded<'shutting_down'>;
  readonly SessionRevoked: new (code: string, text: string, frame?: ServerFrame) => SessionEnded & Coded<'session_revoked'>;
  readonly Kicked: new (code: string, text: string, frame?: ServerFrame) => SessionEnded & Coded<'kicked'>;
  readonly Redirected: new (code: string, text: string, frame?: ServerFrame) => SessionEnded & Coded<'redirected'>;
  readonly TokenLoginsOff: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_logins_off'>;
  readonly TokenMalformed: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_malformed'>;
  readonly TokenUnknownKey: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_unknown_key'>;
  readonly TokenBadSignature: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_bad_signature'>;
  readonly TokenExpired: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_expired'>;
  readonly TokenNotYetValid: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_not_yet_valid'>;
  readonly TokenWrongAudience: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_wrong_audience'>;
  readonly TokenWrongIssuer: new (code: string, text: string, frame?: ServerFrame) => TokenError & Coded<'token_wrong_issuer'>;
  readonly ResumeExpired: new (code: string, text: string, frame?: ServerFrame) => ResumeError & Coded<'resume_expired'>;
  readonly ResumeRefused: new (code: string, text: string, frame?: ServerFrame) => ResumeError & Coded<'resume_refused'>;
  readonly SessionExpired: new (code: string, text: string, frame?: ServerFrame) => SessionEnded & Coded<'session_expired'>;
  readonly Forbidden: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'forbidden'>;
  readonly LimitReached: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'limit_reached'>;
  readonly QueueFull: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'queue_full'>;
  readonly StoreFailed: new (code: string, text: string, frame?: ServerFrame) => ServerError & Coded<'store_failed'>;
  readonly DialRefused: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'dial_refused'>;
  readonly DialOffline: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'dial_offline'>;
  readonly DialTimeout: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'dial_timeout'>;
  readonly DialAnswered: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'dial_answered'>;
  readonly UnknownStream: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'unknown_stream'>;
  readonly StreamCreditExceeded: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'stream_credit_exceeded'>;
  readonly StreamClosed: new (code: string, text: string, frame?: ServerFrame) => MessageError & Coded<'stream_closed'>;
  readonly InternalError: new (code: string, text: string, frame?: ServerFrame) => ServerError & Coded<'internal_error'>;
  readonly Timeout: new (code: string, text: string, frame?: ServerFrame) => ClientError & Coded<'timeout'>;
  readonly ConnectionLost: new (code: string, text: string, frame?: ServerFrame) => ClientError & Coded<'connection_lost'>;
  readonly Closed: new (code: string, text: string, frame?: ServerFrame) => ClientError & Coded<'closed'>;
  readonly RedirectRefused: new (code: string, text: string, frame?: ServerFrame) => ClientError & Coded<'redirect_refused'>;
  readonly TooManyRedirects: new (code: string, text: string, frame?: ServerFrame) => ClientError & Coded<'too_many_redirects'>;
  readonly ProtocolError: new (code: string, text: string, frame?: ServerFrame) => ClientError & Coded<'protocol_error'>;
};

/** code → class. */
export declare const ERRORS: { readonly [K in ErrorCodeName]: new (code: string, text: string, frame?: ServerFrame) => BesterError & Coded<K> };

export declare function errorFor<C extends ErrorCodeName>(code: C, text: string, frame?: ServerFrame): BesterError & Coded<C>;
export declare function errorFor(code: string, text: string, frame?: ServerFrame): BesterError;
export declare function fromFrame(frame: ServerFrame): BesterError;
export declare const FATAL_LOGIN: ReadonlySet<string>;
export declare const FINAL: ReadonlySet<string>;

// ---------------------------------------------------------------------------------------------
// Frames a client sends (§2, §3)
// ---------------------------------------------------------------------------------------------

export interface PasswordAuthentication {
  username: string;
  password: string;
}
/** A JWT the application issued, or a `v1.` resume token. */
export interface TokenAuthentication {
  token: string;
}
export interface ResumeAuthentication {
  resume: string;
}
/** Key login: base64 of the 32-byte ed25519 public key; the server answers with a Challenge. */
export interface KeyAuthentication {
  username: string;
  publicKey: string;
}
export type Authentication =
  | PasswordAuthentication
  | TokenAuthentication
  | ResumeAuthentication
  | KeyAuthentication
  | { [field: string]: Json }; // an auth handler's own shape, e.g. {apiKey}

export interface IdentifyFrame {
  header: { identify: { type: 'client'; authentication?: Authentication; features?: string[] } };
}
export interface SignatureFrame {
  header: { signature: string };
}
export interface ClientMessage {
  header: { scope: 'client'; id?: string; authentication?: PasswordAuthentication };
  payload: { type: string; data?: Json };
}
export type ClientFrame = IdentifyFrame | SignatureFrame | ClientMessage;

// ---------------------------------------------------------------------------------------------
// Frames a server sends a client (§2, §3, §6 redirects)
// ---------------------------------------------------------------------------------------------

/** The data of a successful login's reply. */
export interface LoginData {
  user: string;
  server: string;
  resume?: string;
  /** Seconds since the epoch. */
  resume_expires?: number;
  /** A token session's end, in seconds since the epoch. */
  expires?: number;
}
export interface IdentifyReply {
  header: { status: 'ok'; kind: 'reply' };
  data: LoginData;
}
export interface Challenge {
  header: { status: 'ok'; kind: 'challenge' };
  data: { nonce: string; server: string };
}
/** Who a push (or a request) comes from. */
export interface From {
  user?: string;
  server: string;
  handler?: string;
  info?: { [key: string]: Json };
}
/** One peer server's outcome of a sendServers (§7). */
export type ServerReport = { status: 'ok'; delivered?: string[]; offline?: string[]; type?: string } | { status: 'error'; error: string; code: string };
export interface OkReply {
  header: {
    status: 'ok';
    kind: 'reply';
    id?: string;
    type?: string;
    delivered?: string[];
    offline?: string[];
    servers?: { [server: string]: ServerReport };
    /** Users of other servers that could not be reached, with the code of why (§7). */
    failed?: { [user: string]: string };
  };
  data: Json;
}
export interface ErrorReply {
  header: { status: 'error'; kind: 'reply'; id?: string };
  data: ErrorData;
}
export interface PushFrame {
  /** `msg` (a durable id, decimal) and `time` (ms since the epoch) on a push of a storing type; `stored` when it was kept while the user was away. */
  header: { status: 'ok'; kind: 'push'; type: string; from: From; msg?: string; time?: number; stored?: boolean };
  data: Json;
}
/** A request (or a login) answered by sending the client to another server. */
export interface RedirectFrame {
  header: { status: 'ok'; kind: 'redirect'; id?: string };
  data: { url: string; token?: string };
}
export type ServerFrame = IdentifyReply | Challenge | OkReply | ErrorReply | PushFrame | RedirectFrame;

// ---------------------------------------------------------------------------------------------
// Handler frames (§6)
// ---------------------------------------------------------------------------------------------

export interface HandlerRequestFrame {
  header: { kind: 'request'; request: string; scope: 'client' | 'server'; from: From; via?: string[] };
  payload: { type: string; data?: Json };
}
export interface LoginRequestFrame {
  header: { kind: 'login'; request: string; from: { address: string; listener: string; transport: string } };
  payload: { type: 'bester.login'; data: Authentication };
}
export interface ReportFrame {
  header: { kind: 'report'; status: 'ok' | 'error'; id?: string; request?: string; delivered?: string[]; offline?: string[]; servers?: { [server: string]: ServerReport }; failed?: { [user: string]: string } };
  data?: ErrorData;
}
export type BrokerFrame = HandlerRequestFrame | LoginRequestFrame | ReportFrame;

export type Command = 'reply' | 'sendClients' | 'sendServers' | 'sendHandler' | 'redirect';
export interface AnswerFrame {
  header: {
    status: 'ok' | 'error';
    command: Command;
    commandData?: string[] | string | { url: string; token?: string };
    request?: string;
    id?: string;
  };
  payload?: { type: string; data: Json };
}

// ---------------------------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------------------------

export declare const MAX_FRAME: number;
export declare const DEFAULT_PORT: number;
export declare const MAX_REDIRECTS: number;

export declare function encodeBody(value: unknown, maxFrame?: number): Uint8Array;
export declare function encodeFrame(value: unknown, maxFrame?: number): Uint8Array;
export declare function decodeBody(body: Uint8Array | string): Json;

/** Bodies shorter than this are never compressed. */
export declare const COMPRESS_MIN: number;
/** Whether a frame must never be compressed (not a message, or a `bester.*` type). */
export declare function carriesSecret(frame: unknown): boolean;

export declare class FrameDecoder {
  constructor(maxFrame?: number);
  readonly maxFrame: number;
  /** Bytes held that are not a whole frame yet (non-zero at EOF: a truncated frame). */
  readonly pending: number;
  feed(chunk: Uint8Array): Json[];
  /** One whole body as the value `feed` returns. */
  decode(body: Uint8Array): Json;
}

export interface BesterUrl {
  scheme: 'bester' | 'bester+tls' | 'bester+ws' | 'bester+wss';
  host: string;
  port: number;
  username: string | null;
  password: string | null;
  path: string;
  tls: boolean;
  ws: boolean;
  /** host:port ([v6]:port). */
  authority: string;
}
export declare function parseUrl(text: string): BesterUrl;
export declare function showUrl(url: BesterUrl): string;

export declare function identify(authentication?: Authentication | null, features?: string[]): IdentifyFrame;
export declare function message(id: string | undefined, type: string, data?: Json): ClientMessage;
export declare function authentication(credentials: {
  username?: string | null;
  password?: string | null;
  token?: string | null;
  resume?: string | null;
  publicKey?: string | null;
  custom?: Authentication;
}): Authentication;
export declare function signedBytes(server: string, username: string, nonce: string): Uint8Array;

export type LoginStep =
  | { kind: 'ok'; data: LoginData }
  | { kind: 'challenge'; message: Uint8Array; server: string; nonce: string }
  | { kind: 'redirect'; url: string; token: string | null };

export declare class Login {
  constructor(auth: Authentication | null, options?: { username?: string; serverName?: string; hasKey?: boolean });
  readonly auth: Authentication | null;
  first(): IdentifyFrame;
  signature(base64: string): SignatureFrame;
  step(frame: ServerFrame): LoginStep;
}

export declare function redirectTarget(frame: RedirectFrame): { url: string; token: string | null };
export declare function checkRedirect(current: BesterUrl, target: string, token: string | null | undefined, hops: number): BesterUrl;

export declare function classify(frame: unknown): { kind: 'reply' | 'redirect' | 'push' | 'error' | 'other'; id: string | undefined };

/** A push as the client hands it out. */
export interface Push {
  type: string;
  data: Json;
  from: From;
  frame: PushFrame;
  /** The durable id of a push of a storing type (acknowledge it with `bester.ack`). */
  msg?: string;
  /** With `msg`: it was stored while the user was away. */
  stored?: boolean;
  /** With `msg`: when it was stored, ms since the epoch. */
  time?: number;
}
export declare function pushOf(frame: PushFrame): Push;

export declare class Calls<T = unknown> {
  constructor(prefix?: string);
  id(): string;
  add(value: T, id?: string): string;
  take(id: string): T | undefined;
  readonly size: number;
  drain(): T[];
}
