// check.ts: the TypeScript declarations of bester-client (index.d.ts, lib/protocol.d.ts) used as
// an application, a handler and a page would use them. Never run: scripts/test.sh compiles it with
// `tsc --noEmit --strict`, so a declaration that is wrong (a type too narrow, too wide, or missing)
// fails the build. `@ts-expect-error` lines must stay errors: they catch declarations grown loose.
// Every message type and every error code is here; test/declarations.test.js checks that the
// declarations name what the JavaScript exports.

import {
  Answer,
  BesterError,
  Calls,
  Client,
  ERRORS,
  ErrorCode,
  FrameDecoder,
  Handler,
  Login,
  LoginRequest,
  MAX_FRAME,
  Report,
  Request,
  authentication,
  carriesSecret,
  checkRedirect,
  classify,
  connect,
  decodeBody,
  encodeFrame,
  errorFor,
  errors,
  fromFrame,
  identify,
  log,
  message,
  parseUrl,
  pushOf,
  redirectTarget,
  AuthError, ClientError, FrameError, HandlerFailed, MessageError, PeerError, ResumeError, ServerError, SessionEnded, TokenError,
} from 'bester-client';
import type {
  AnswerFrame,
  BesterUrl,
  BrokerFrame,
  Challenge,
  ClientErrorCode,
  ClientFrame,
  ClientMessage,
  ErrorCodeName,
  ErrorData,
  ErrorReply,
  From,
  HandlerRequestFrame,
  IdentifyFrame,
  IdentifyReply,
  Json,
  LoginData,
  LoginRequestFrame,
  LoginStep,
  OkReply,
  Push,
  PushFrame,
  RedirectFrame,
  ReportFrame,
  ServerErrorCode,
  ServerFrame,
  SignatureFrame,
} from 'bester-client';
import * as core from 'bester-client/protocol';

/** true only if A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only for `true`. */
function assertType<T extends true>(): T | void {}
/** Compiles only if `value` is a T. */
function is<T>(value: T): T {
  return value;
}

// ---------------------------------------------------------------------------------------------
// Every error code (PROTOCOL.md §8, then the library's own), its class, and its family
// ---------------------------------------------------------------------------------------------

const SERVER_CODES = [
  'frame_too_large',
  'invalid_utf8',
  'invalid_json',
  'invalid_message',
  'unknown_scope',
  'not_identified',
  'already_identified',
  'bad_identify_type',
  'auth_failed',
  'identify_timeout',
  'idle_timeout',
  'rate_limited',
  'too_many_connections',
  'unknown_type',
  'reserved_type',
  'handler_not_running',
  'handler_unavailable',
  'handler_timeout',
  'handler_busy',
  'handler_error',
  'bad_handler_reply',
  'handler_loop',
  'chain_too_deep',
  'unknown_peer',
  'peer_unreachable',
  'peer_unavailable',
  'peer_timeout',
  'hop_limit',
  'forged_origin',
  'server_busy',
  'slow_consumer',
  'shutting_down',
  'session_revoked',
  'kicked',
  'redirected',
  'token_logins_off',
  'token_malformed',
  'token_unknown_key',
  'token_bad_signature',
  'token_expired',
  'token_not_yet_valid',
  'token_wrong_audience',
  'token_wrong_issuer',
  'resume_expired',
  'resume_refused',
  'session_expired',
  'forbidden',
  'limit_reached',
  'queue_full',
  'store_failed',
  'dial_refused',
  'dial_offline',
  'dial_timeout',
  'dial_answered',
  'unknown_stream',
  'stream_credit_exceeded',
  'stream_closed',
  'internal_error',
] as const;
const CLIENT_CODES = [
  'timeout',
  'connection_lost',
  'closed',
  'redirect_refused',
  'too_many_redirects',
  'protocol_error',
] as const;
assertType<Equal<(typeof SERVER_CODES)[number], ServerErrorCode>>();
assertType<Equal<(typeof CLIENT_CODES)[number], ClientErrorCode>>();
assertType<Equal<ServerErrorCode | ClientErrorCode, ErrorCodeName>>();

// ErrorCode.HANDLER_UNAVAILABLE === 'handler_unavailable', for every code.
type CodeNames = { [K in ErrorCodeName]: Equal<(typeof ErrorCode)[Uppercase<K>], K> };
assertType<Equal<CodeNames[ErrorCodeName], true>>();
assertType<Equal<keyof typeof ErrorCode, Uppercase<ErrorCodeName>>>();
// ERRORS[code] makes errors whose code is that code, for every code.
type Coded = { [K in ErrorCodeName]: Equal<InstanceType<(typeof ERRORS)[K]>['code'], K> };
assertType<Equal<Coded[ErrorCodeName], true>>();
assertType<Equal<keyof typeof ERRORS, ErrorCodeName>>();

// One class per code, in its family.
assertType<Equal<InstanceType<typeof errors.FrameTooLarge>['code'], 'frame_too_large'>>();
is<FrameError>(new errors.FrameTooLarge('frame_too_large', 'text'));
assertType<Equal<InstanceType<typeof errors.InvalidUtf8>['code'], 'invalid_utf8'>>();
is<FrameError>(new errors.InvalidUtf8('invalid_utf8', 'text'));
assertType<Equal<InstanceType<typeof errors.InvalidJson>['code'], 'invalid_json'>>();
is<FrameError>(new errors.InvalidJson('invalid_json', 'text'));
assertType<Equal<InstanceType<typeof errors.InvalidMessage>['code'], 'invalid_message'>>();
is<MessageError>(new errors.InvalidMessage('invalid_message', 'text'));
assertType<Equal<InstanceType<typeof errors.UnknownScope>['code'], 'unknown_scope'>>();
is<MessageError>(new errors.UnknownScope('unknown_scope', 'text'));
assertType<Equal<InstanceType<typeof errors.NotIdentified>['code'], 'not_identified'>>();
is<MessageError>(new errors.NotIdentified('not_identified', 'text'));
assertType<Equal<InstanceType<typeof errors.AlreadyIdentified>['code'], 'already_identified'>>();
is<MessageError>(new errors.AlreadyIdentified('already_identified', 'text'));
assertType<Equal<InstanceType<typeof errors.BadIdentifyType>['code'], 'bad_identify_type'>>();
is<MessageError>(new errors.BadIdentifyType('bad_identify_type', 'text'));
assertType<Equal<InstanceType<typeof errors.AuthFailed>['code'], 'auth_failed'>>();
is<AuthError>(new errors.AuthFailed('auth_failed', 'text'));
assertType<Equal<InstanceType<typeof errors.IdentifyTimeout>['code'], 'identify_timeout'>>();
is<AuthError>(new errors.IdentifyTimeout('identify_timeout', 'text'));
assertType<Equal<InstanceType<typeof errors.IdleTimeout>['code'], 'idle_timeout'>>();
is<SessionEnded>(new errors.IdleTimeout('idle_timeout', 'text'));
assertType<Equal<InstanceType<typeof errors.RateLimited>['code'], 'rate_limited'>>();
is<AuthError>(new errors.RateLimited('rate_limited', 'text'));
assertType<Equal<InstanceType<typeof errors.TooManyConnections>['code'], 'too_many_connections'>>();
is<ServerError>(new errors.TooManyConnections('too_many_connections', 'text'));
assertType<Equal<InstanceType<typeof errors.UnknownType>['code'], 'unknown_type'>>();
is<MessageError>(new errors.UnknownType('unknown_type', 'text'));
assertType<Equal<InstanceType<typeof errors.ReservedType>['code'], 'reserved_type'>>();
is<MessageError>(new errors.ReservedType('reserved_type', 'text'));
assertType<Equal<InstanceType<typeof errors.HandlerNotRunning>['code'], 'handler_not_running'>>();
is<HandlerFailed>(new errors.HandlerNotRunning('handler_not_running', 'text'));
assertType<Equal<InstanceType<typeof errors.HandlerUnavailable>['code'], 'handler_unavailable'>>();
is<HandlerFailed>(new errors.HandlerUnavailable('handler_unavailable', 'text'));
assertType<Equal<InstanceType<typeof errors.HandlerTimeout>['code'], 'handler_timeout'>>();
is<HandlerFailed>(new errors.HandlerTimeout('handler_timeout', 'text'));
assertType<Equal<InstanceType<typeof errors.HandlerBusy>['code'], 'handler_busy'>>();
is<HandlerFailed>(new errors.HandlerBusy('handler_busy', 'text'));
assertType<Equal<InstanceType<typeof errors.HandlerError>['code'], 'handler_error'>>();
is<HandlerFailed>(new errors.HandlerError('handler_error', 'text'));
assertType<Equal<InstanceType<typeof errors.BadHandlerReply>['code'], 'bad_handler_reply'>>();
is<HandlerFailed>(new errors.BadHandlerReply('bad_handler_reply', 'text'));
assertType<Equal<InstanceType<typeof errors.HandlerLoop>['code'], 'handler_loop'>>();
is<HandlerFailed>(new errors.HandlerLoop('handler_loop', 'text'));
assertType<Equal<InstanceType<typeof errors.ChainTooDeep>['code'], 'chain_too_deep'>>();
is<HandlerFailed>(new errors.ChainTooDeep('chain_too_deep', 'text'));
assertType<Equal<InstanceType<typeof errors.UnknownPeer>['code'], 'unknown_peer'>>();
is<PeerError>(new errors.UnknownPeer('unknown_peer', 'text'));
assertType<Equal<InstanceType<typeof errors.PeerUnreachable>['code'], 'peer_unreachable'>>();
is<PeerError>(new errors.PeerUnreachable('peer_unreachable', 'text'));
assertType<Equal<InstanceType<typeof errors.PeerUnavailable>['code'], 'peer_unavailable'>>();
is<PeerError>(new errors.PeerUnavailable('peer_unavailable', 'text'));
assertType<Equal<InstanceType<typeof errors.PeerTimeout>['code'], 'peer_timeout'>>();
is<PeerError>(new errors.PeerTimeout('peer_timeout', 'text'));
assertType<Equal<InstanceType<typeof errors.HopLimit>['code'], 'hop_limit'>>();
is<PeerError>(new errors.HopLimit('hop_limit', 'text'));
assertType<Equal<InstanceType<typeof errors.ForgedOrigin>['code'], 'forged_origin'>>();
is<PeerError>(new errors.ForgedOrigin('forged_origin', 'text'));
assertType<Equal<InstanceType<typeof errors.ServerBusy>['code'], 'server_busy'>>();
is<ServerError>(new errors.ServerBusy('server_busy', 'text'));
assertType<Equal<InstanceType<typeof errors.SlowConsumer>['code'], 'slow_consumer'>>();
is<ServerError>(new errors.SlowConsumer('slow_consumer', 'text'));
assertType<Equal<InstanceType<typeof errors.ShuttingDown>['code'], 'shutting_down'>>();
is<SessionEnded>(new errors.ShuttingDown('shutting_down', 'text'));
assertType<Equal<InstanceType<typeof errors.SessionRevoked>['code'], 'session_revoked'>>();
is<SessionEnded>(new errors.SessionRevoked('session_revoked', 'text'));
assertType<Equal<InstanceType<typeof errors.Kicked>['code'], 'kicked'>>();
is<SessionEnded>(new errors.Kicked('kicked', 'text'));
assertType<Equal<InstanceType<typeof errors.Redirected>['code'], 'redirected'>>();
is<SessionEnded>(new errors.Redirected('redirected', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenLoginsOff>['code'], 'token_logins_off'>>();
is<TokenError>(new errors.TokenLoginsOff('token_logins_off', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenMalformed>['code'], 'token_malformed'>>();
is<TokenError>(new errors.TokenMalformed('token_malformed', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenUnknownKey>['code'], 'token_unknown_key'>>();
is<TokenError>(new errors.TokenUnknownKey('token_unknown_key', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenBadSignature>['code'], 'token_bad_signature'>>();
is<TokenError>(new errors.TokenBadSignature('token_bad_signature', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenExpired>['code'], 'token_expired'>>();
is<TokenError>(new errors.TokenExpired('token_expired', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenNotYetValid>['code'], 'token_not_yet_valid'>>();
is<TokenError>(new errors.TokenNotYetValid('token_not_yet_valid', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenWrongAudience>['code'], 'token_wrong_audience'>>();
is<TokenError>(new errors.TokenWrongAudience('token_wrong_audience', 'text'));
assertType<Equal<InstanceType<typeof errors.TokenWrongIssuer>['code'], 'token_wrong_issuer'>>();
is<TokenError>(new errors.TokenWrongIssuer('token_wrong_issuer', 'text'));
assertType<Equal<InstanceType<typeof errors.ResumeExpired>['code'], 'resume_expired'>>();
is<ResumeError>(new errors.ResumeExpired('resume_expired', 'text'));
assertType<Equal<InstanceType<typeof errors.ResumeRefused>['code'], 'resume_refused'>>();
is<ResumeError>(new errors.ResumeRefused('resume_refused', 'text'));
assertType<Equal<InstanceType<typeof errors.SessionExpired>['code'], 'session_expired'>>();
is<SessionEnded>(new errors.SessionExpired('session_expired', 'text'));
assertType<Equal<InstanceType<typeof errors.InternalError>['code'], 'internal_error'>>();
is<ServerError>(new errors.InternalError('internal_error', 'text'));
assertType<Equal<InstanceType<typeof errors.Timeout>['code'], 'timeout'>>();
is<ClientError>(new errors.Timeout('timeout', 'text'));
assertType<Equal<InstanceType<typeof errors.ConnectionLost>['code'], 'connection_lost'>>();
is<ClientError>(new errors.ConnectionLost('connection_lost', 'text'));
assertType<Equal<InstanceType<typeof errors.Closed>['code'], 'closed'>>();
is<ClientError>(new errors.Closed('closed', 'text'));
assertType<Equal<InstanceType<typeof errors.RedirectRefused>['code'], 'redirect_refused'>>();
is<ClientError>(new errors.RedirectRefused('redirect_refused', 'text'));
assertType<Equal<InstanceType<typeof errors.TooManyRedirects>['code'], 'too_many_redirects'>>();
is<ClientError>(new errors.TooManyRedirects('too_many_redirects', 'text'));
assertType<Equal<InstanceType<typeof errors.ProtocolError>['code'], 'protocol_error'>>();
is<ClientError>(new errors.ProtocolError('protocol_error', 'text'));
assertType<Equal<keyof typeof errors, 'FrameTooLarge' | 'InvalidUtf8' | 'InvalidJson' | 'InvalidMessage' | 'UnknownScope' | 'NotIdentified' | 'AlreadyIdentified' | 'BadIdentifyType' | 'AuthFailed' | 'IdentifyTimeout' | 'IdleTimeout' | 'RateLimited' | 'TooManyConnections' | 'UnknownType' | 'ReservedType' | 'HandlerNotRunning' | 'HandlerUnavailable' | 'HandlerTimeout' | 'HandlerBusy' | 'HandlerError' | 'BadHandlerReply' | 'HandlerLoop' | 'ChainTooDeep' | 'UnknownPeer' | 'PeerUnreachable' | 'PeerUnavailable' | 'PeerTimeout' | 'HopLimit' | 'ForgedOrigin' | 'ServerBusy' | 'SlowConsumer' | 'ShuttingDown' | 'SessionRevoked' | 'Kicked' | 'Redirected' | 'TokenLoginsOff' | 'TokenMalformed' | 'TokenUnknownKey' | 'TokenBadSignature' | 'TokenExpired' | 'TokenNotYetValid' | 'TokenWrongAudience' | 'TokenWrongIssuer' | 'ResumeExpired' | 'ResumeRefused' | 'SessionExpired' | 'Forbidden' | 'LimitReached' | 'QueueFull' | 'StoreFailed' | 'DialRefused' | 'DialOffline' | 'DialTimeout' | 'DialAnswered' | 'UnknownStream' | 'StreamCreditExceeded' | 'StreamClosed' | 'InternalError' | 'Timeout' | 'ConnectionLost' | 'Closed' | 'RedirectRefused' | 'TooManyRedirects' | 'ProtocolError'>>();
is<BesterError>(new AuthError('auth_failed', 'text'));
is<AuthError>(new TokenError('token_expired', 'text'));
is<AuthError>(new ResumeError('resume_expired', 'text'));

// errorFor narrows a known code, and takes a handler's own.
assertType<Equal<ReturnType<typeof errorFor<'handler_busy'>>['code'], 'handler_busy'>>();
const own: BesterError = errorFor('not_in_room', 'alice is not in room "r"');
is<ErrorCodeName | (string & {})>(own.code);
is<string>(own.text);
is<ErrorData | undefined>(own.data);
is<ServerFrame | undefined>(own.frame);
is<Error>(own);
// @ts-expect-error a code is a string
errorFor(42, 'text');

// ---------------------------------------------------------------------------------------------
// Every message: what a client sends, what a server sends it, and the handler's frames
// ---------------------------------------------------------------------------------------------

const identifyFrame: IdentifyFrame = { header: { identify: { type: 'client', authentication: { username: 'alice', password: 'pw' } } } };
const tokenIdentify: IdentifyFrame = { header: { identify: { type: 'client', authentication: { token: 'v1.x' } } } };
const keyIdentify: IdentifyFrame = { header: { identify: { type: 'client', authentication: { username: 'a', publicKey: 'AAAA' } } } };
const signature: SignatureFrame = { header: { signature: 'c2ln' } };
const request: ClientMessage = { header: { scope: 'client', id: 'm1' }, payload: { type: 'echo', data: { hello: ['world', 1, true, null] } } };
// @ts-expect-error a client message's scope is "client"
const badScope: ClientMessage = { header: { scope: 'server', id: 'm1' }, payload: { type: 'echo' } };
// @ts-expect-error identify's type is "client"
const badIdentify: IdentifyFrame = { header: { identify: { type: 'peer' } } };
const clientFrames: ClientFrame[] = [identifyFrame, tokenIdentify, keyIdentify, signature, request];

const loginData: LoginData = { user: 'alice', server: 'node-a', resume: 'v1.r', resume_expires: 1, expires: 2 };
const identifyReply: IdentifyReply = { header: { status: 'ok', kind: 'reply' }, data: loginData };
const challenge: Challenge = { header: { status: 'ok', kind: 'challenge' }, data: { nonce: 'n', server: 'node-a' } };
const okReply: OkReply = {
  header: { status: 'ok', kind: 'reply', id: 'm1', type: 'chat', delivered: ['alice'], offline: ['carol'], servers: { b: { status: 'ok', delivered: ['erin'] }, c: { status: 'error', error: 'gone', code: 'peer_unreachable' } } },
  data: { room: 'r' },
};
const errorReply: ErrorReply = { header: { status: 'error', kind: 'reply', id: 'm2' }, data: { error: 'no', code: 'handler_error', status: '3' } };
const handlerCode: ErrorReply = { header: { status: 'error', kind: 'reply' }, data: { error: 'no', code: 'not_in_room' } };
const pushFrame: PushFrame = { header: { status: 'ok', kind: 'push', type: 'chat', from: { user: 'bob', server: 'node-a', info: { plan: 'pro' } } }, data: 'hi' };
const redirect: RedirectFrame = { header: { status: 'ok', kind: 'redirect', id: 'm3' }, data: { url: 'bester+wss://s1:443', token: 'v1.t' } };
// @ts-expect-error a reply's status is "ok" or "error"
const badStatus: OkReply = { header: { status: 'maybe', kind: 'reply' }, data: null };
// @ts-expect-error an error's data has its text and code
const badError: ErrorReply = { header: { status: 'error', kind: 'reply' }, data: { code: 'x' } };
// @ts-expect-error a push names who sent it
const anonymous: PushFrame = { header: { status: 'ok', kind: 'push', type: 'chat' }, data: 1 };
const serverFrames: ServerFrame[] = [identifyReply, challenge, okReply, errorReply, handlerCode, pushFrame, redirect];

const handlerRequest: HandlerRequestFrame = {
  header: { kind: 'request', request: '17', scope: 'server', from: { user: 'alice', server: 'node-b', handler: 'greet' }, via: ['node-b'] },
  payload: { type: 'echo', data: { hello: 'world' } },
};
const loginRequest: LoginRequestFrame = {
  header: { kind: 'login', request: '4', from: { address: '127.0.0.1:5000', listener: 'main', transport: 'tcp' } },
  payload: { type: 'bester.login', data: { apiKey: 'k-1' } },
};
const report: ReportFrame = { header: { kind: 'report', status: 'error', request: '9' }, data: { error: 'unknown command', code: 'bad_handler_reply' } };
const pushReport: ReportFrame = { header: { kind: 'report', status: 'ok', id: 'p1', delivered: ['bob'], offline: [], servers: {} } };
const brokerFrames: BrokerFrame[] = [handlerRequest, loginRequest, report, pushReport];
// @ts-expect-error a login request's type is bester.login
const badLogin: LoginRequestFrame = { ...loginRequest, payload: { type: 'echo', data: {} } };

const answers: AnswerFrame[] = [
  { header: { status: 'ok', command: 'reply', request: '17' }, payload: { type: 'echo', data: 1 } },
  { header: { status: 'error', command: 'reply', request: '17' }, payload: { type: 'echo', data: { error: 'no', code: 'bad_request' } } },
  { header: { status: 'ok', command: 'sendClients', commandData: ['bob'], request: '17' }, payload: { type: 'chat', data: 'hi' } },
  { header: { status: 'ok', command: 'sendServers', commandData: ['node-b'], id: 'p1' }, payload: { type: 'chat', data: null } },
  { header: { status: 'ok', command: 'sendHandler', commandData: 'upper', request: '17' }, payload: { type: 'upper', data: { text: 'x' } } },
  { header: { status: 'ok', command: 'redirect', commandData: { url: 'bester://h:1', token: 'mint' }, request: '17' } },
];
// @ts-expect-error no such command
const badCommand: AnswerFrame = { header: { status: 'ok', command: 'broadcast' } };

// ---------------------------------------------------------------------------------------------
// The protocol core (also `bester-client/protocol`, what the browser's bester.js imports)
// ---------------------------------------------------------------------------------------------

// Exactly these types (an `any` would pass the uses below, not these).
assertType<Equal<ReturnType<typeof parseUrl>, BesterUrl>>();
assertType<Equal<Parameters<typeof parseUrl>, [text: string]>>();
assertType<Equal<ReturnType<typeof encodeFrame>, Uint8Array>>();
assertType<Equal<ReturnType<typeof decodeBody>, Json>>();
assertType<Equal<ReturnType<FrameDecoder['feed']>, Json[]>>();
assertType<Equal<ReturnType<typeof identify>, IdentifyFrame>>();
assertType<Equal<ReturnType<typeof message>, ClientMessage>>();
assertType<Equal<ReturnType<Login['step']>, LoginStep>>();
assertType<Equal<ReturnType<typeof pushOf>, Push>>();
assertType<Equal<ReturnType<typeof checkRedirect>, BesterUrl>>();
assertType<Equal<ReturnType<typeof redirectTarget>, { url: string; token: string | null }>>();
assertType<Equal<ReturnType<typeof fromFrame>, BesterError>>();
assertType<Equal<ReturnType<typeof connect>, Promise<Client>>>();
assertType<Equal<ReturnType<Client['requestFrame']>, Promise<OkReply>>>();
assertType<Equal<ReturnType<Handler['push']>, Promise<Report>>>();
assertType<Equal<ReturnType<Handler['respond']>, Promise<AnswerFrame | null>>>();
assertType<Equal<ReturnType<Request['reply']>, Answer>>();
assertType<Equal<Json, null | boolean | number | string | Json[] | { [key: string]: Json }>>();

const url: BesterUrl = parseUrl('bester+tls://alice@h:2222/x');
is<boolean>(url.tls);
is<string | null>(url.password);
assertType<Equal<BesterUrl['scheme'], 'bester' | 'bester+tls' | 'bester+ws' | 'bester+wss'>>();
is<BesterUrl>(core.checkRedirect(url, 'bester://other:1', 'v1.t', 0));
is<BesterUrl>(checkRedirect(core.parseUrl('bester+ws://h'), 'bester+wss://h', null, 1));
is<Uint8Array>(encodeFrame(request, MAX_FRAME));
is<Json>(decodeBody('{}'));
const decoder = new FrameDecoder(1 << 20);
is<Json[]>(decoder.feed(new Uint8Array(4)));
is<number>(decoder.pending);
is<IdentifyFrame>(identify(authentication({ username: 'alice', password: 'pw' })));
is<IdentifyFrame>(identify(null));
is<ClientMessage>(message('m1', 'echo', { a: 1 }));
const attempt = new Login({ resume: 'v1.r' }, { username: 'alice', hasKey: false });
is<IdentifyFrame>(attempt.first());
is<SignatureFrame>(attempt.signature('c2ln'));
const step: LoginStep = attempt.step(identifyReply);
if (step.kind === 'ok') is<LoginData>(step.data);
else if (step.kind === 'challenge') is<Uint8Array>(step.message);
else is<string | null>(step.token);
is<{ url: string; token: string | null }>(redirectTarget(redirect));
const sorted = classify(okReply);
assertType<Equal<typeof sorted.kind, 'reply' | 'redirect' | 'push' | 'error' | 'other'>>();
const push: Push = pushOf(pushFrame);
is<From>(push.from);
const calls = new Calls<{ type: string }>('m');
const id: string = calls.add({ type: 'echo' });
is<{ type: string } | undefined>(calls.take(id));
is<{ type: string }[]>(calls.drain());
is<BesterError>(fromFrame(errorReply));
is<ReadonlySet<string>>(core.FATAL_LOGIN);

// ---------------------------------------------------------------------------------------------
// A client
// ---------------------------------------------------------------------------------------------

export async function client(): Promise<void> {
  const c: Client = await connect('bester://alice:pw@localhost:2222', { timeout: 1000, keepalive: 0, reconnect: false });
  is<string | null>(c.user);
  is<Json>(await c.request('echo', { hello: 'world' }));
  is<number>(await c.request<number>('count', null, { timeout: 5 }));
  const frame = await c.requestFrame('chat', { action: 'say' });
  is<string[] | undefined>(frame.header.delivered);
  is<'pong'>(await c.ping());
  c.on('push', (p) => is<Push>(p));
  c.on('connect', (data) => is<LoginData>(data));
  c.on('close', (error) => is<BesterError | null>(error));
  for await (const p of c) is<string>(p.type);
  const manual: Client = await connect('bester://bob:pw@localhost:2222', { autoAck: false, maxSeen: 100 });
  manual.on('ackError', (error) => is<BesterError>(error));
  const stored = await manual.nextPush();
  if (stored && stored.msg !== undefined) {
    is<string>(stored.msg);
    is<boolean | undefined>(stored.stored);
    is<number | undefined>(stored.time);
    is<number>(await manual.ack(stored, stored.msg));
  }
  // @ts-expect-error ack takes pushes or their ids
  await manual.ack(42);
  const packed: Client = await connect('bester://bob:pw@localhost:2222', { compress: true });
  is<string[]>(packed.features);
  is<number | undefined>(packed.limits.max_frame_bytes);
  is<boolean>(carriesSecret({ payload: { type: 'bester.refresh' } }));
  try {
    await c.request('echo');
  } catch (e) {
    if (e instanceof errors.HandlerUnavailable) is<'handler_unavailable'>(e.code);
    if (e instanceof HandlerFailed) is<string>(e.text);
  }
  // @ts-expect-error request data is JSON
  await c.request('echo', () => 1);
  // @ts-expect-error no such event
  c.on('message', () => {});
  c.close();
}

// ---------------------------------------------------------------------------------------------
// A handler
// ---------------------------------------------------------------------------------------------

export async function handler(): Promise<void> {
  const h = new Handler({ exitOnClose: false });
  h.on('echo', (r: Request) => r.data)
    .on('chat', async (r) => r.sendClients([r.user ?? 'nobody'], { room: 'r' }))
    .on('upper', (r) => r.sendHandler('echo', { text: 'X' }))
    .on('greet', (r) => r.redirect('bester+wss://s1:443', 'mint'))
    .on('*', (r) => {
      if (r.scope === 'server') return r.sendServers(r.via, null);
      throw new BesterError('unknown_type', `not ${r.type}`);
    });
  h.login((l: LoginRequest) => (l.authentication.apiKey === 'k' ? { user: 'alice', info: { plan: 'pro' } } : l.refuse('auth_failed', 'no')));
  h.login((l) => l.accept('alice'));
  h.login(() => 'alice');
  // @ts-expect-error a function answers JSON, an Answer, or nothing
  h.on('bad', () => Symbol('x'));
  // @ts-expect-error a login gives a user
  h.login(() => ({ info: {} }));
  const answer: Answer = new Request(handlerRequest).reply({ ok: true });
  is<AnswerFrame>(answer.frame);
  is<'bester.login'>(new LoginRequest(loginRequest).type);
  const r: Report = await h.push(['bob'], 'news', 'hi');
  is<string[]>(r.delivered);
  is<string | null>(r.code);
  is<AnswerFrame | null>(await h.respond(handlerRequest));
  log.info('served');
  await h.run();
}

export const used = [clientFrames, serverFrames, brokerFrames, answers, badScope, badIdentify, badStatus, badError, anonymous, badLogin, badCommand, own];
