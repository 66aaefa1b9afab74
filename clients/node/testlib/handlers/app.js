// app.js: the test handler (written with this package) for the types app, echo, crash and
// login: each `[handlers.T]` of the test broker runs it, and it serves whatever $BESTER_TYPE is.
import { BesterError, Handler } from '../../index.js';

const handler = new Handler();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

handler.on('echo', (request) => request.data);

handler.on('app', async (request) => {
  const d = request.data || {};
  switch (d.op) {
    case 'slow':
      await sleep(d.ms);
      return d.value;
    case 'tell':
      return request.sendClients(d.to, d.text, 'tell');
    case 'fail':
      throw new BesterError('not_allowed', 'you may not');
    case 'boom':
      throw new Error('boom');
    case 'who':
      return { user: request.user, server: request.server, info: request.info, scope: request.scope };
    case 'go':
      // A greeter: on the server named d.on, send the client to d.url (token: d.token, else a
      // resume token the broker mints); elsewhere say where the request arrived.
      if (request.server === d.on) return request.redirect(d.url, d.token === undefined ? 'mint' : d.token);
      return { at: request.server, user: request.user };
    case 'hop':
      return request.sendHandler('echo', d.value);
    case 'pushme': {
      const report = await handler.push([request.user, 'nobody'], 'news', d.value);
      return { status: report.status, delivered: report.delivered, offline: report.offline };
    }
    default:
      return request.error('bad_request', `no op ${JSON.stringify(d.op)}`);
  }
});

// Dies with the request in flight: the client gets handler_unavailable.
handler.on('crash', () => process.exit(3));

// An auth handler: API keys.
handler.login((login) => {
  if (login.authentication.apiKey === 'k-good') return { user: 'dave', info: { plan: 'pro', via: login.transport } };
  throw new BesterError('auth_failed', 'invalid API key');
});

handler.run();
