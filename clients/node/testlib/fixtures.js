// fixtures.js: the broker configuration most tests share: the test handler for echo, app, crash
// and the auth handler (login), a stable resume-token key and an HS256 secret for JWTs.
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { handler } from './daemon.js';

export const HS_SECRET = 'a test HS256 secret, at least 32 bytes long';

/** [auth] (token key, auth handler), [auth.jwt] and the handlers; paths in `dir`. */
export function appTables(dir) {
  return `[auth]
token_secret_file = ${JSON.stringify(`${dir}/token.key`)}
handler = "login"
[auth.jwt]
hmac_secret_file = ${JSON.stringify(`${dir}/hs.secret`)}
[handlers.echo]
${handler('testlib/handlers/app.js')}
[handlers.app]
${handler('testlib/handlers/app.js')}
[handlers.crash]
${handler('testlib/handlers/app.js')}
[handlers.login]
${handler('testlib/handlers/app.js')}
`;
}

/** The key files appTables names, in the broker's directory. */
export function writeSecrets(b) {
  fs.writeFileSync(b.path('token.key'), randomBytes(32).toString('hex'), { mode: 0o600 });
  fs.writeFileSync(b.path('hs.secret'), HS_SECRET, { mode: 0o600 });
}

