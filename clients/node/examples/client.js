// A client: log in, send one request, print the reply, then print pushes until interrupted.
//   node client.js bester://alice:secret@localhost:2222 echo '{"hello":"world"}'
import { BesterError, connect } from 'bester-client';

const [url = 'bester://alice@localhost:2222', type = 'echo', data = '{"hello":"world"}'] = process.argv.slice(2);
try {
  const client = await connect(url, { password: process.env.BESTER_PASSWORD });
  console.log(JSON.stringify(await client.request(type, JSON.parse(data), { timeout: 5000 })));
  for await (const push of client) console.log(JSON.stringify(push.frame));
} catch (err) {
  if (!(err instanceof BesterError)) throw err;
  console.error(`bester: ${err.code}: ${err.text}`);
  process.exit(1);
}
