// A handler for the "upper" type (the example of handlers/node/upper.js, with this package):
// {"text": "hi"} -> {"text": "HI"}; {"text": …, "then": "T"} passes the result on to T's handler;
// anything else is the error bad_request.
import { BesterError, Handler } from 'bester-client';

const handler = new Handler();
handler.on('upper', (request) => {
  const data = request.data;
  if (!data || typeof data !== 'object' || typeof data.text !== 'string') {
    throw new BesterError('bad_request', 'expected {"text": "<string>"}');
  }
  const out = { text: data.text.toUpperCase() };
  if (typeof data.then === 'string') return request.sendHandler(data.then, out);
  return out;
});
handler.run();
