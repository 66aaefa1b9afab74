// An auth handler ([auth] handler = "login" and [handlers.login] in besterd.toml): the client
// identifies with {"apiKey": "…"} and this decides who it is. Keys from BESTER_API_KEYS as
// "key=user,key=user"; compared in constant time.
import { timingSafeEqual, createHash } from 'node:crypto';
import { BesterError, Handler } from 'bester-client';

const digest = (s) => createHash('sha256').update(String(s)).digest();
const keys = (process.env.BESTER_API_KEYS || '').split(',').filter(Boolean).map((pair) => {
  const [key, user] = pair.split('=');
  return { key: digest(key), user };
});

new Handler()
  .login((login) => {
    const given = digest(login.authentication.apiKey);
    const found = keys.find((k) => timingSafeEqual(k.key, given));
    if (!found) throw new BesterError('auth_failed', 'invalid API key');
    return { user: found.user, info: { via: 'api-key' } };
  })
  .run();
