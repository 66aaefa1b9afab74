// A handler for the "upper" type (handlers/node/upper.js, written with this package):
// {"text": "hi"} -> {"text": "HI"} (other fields kept); {"text": …, "forward": "T"} passes the
// result on to T's handler; anything else is the error bad_request.
//   [handlers.upper] command = ["node", "/path/to/upper_handler.js"]
import { BesterError, Handler } from 'bester-client';

const TYPE_NAME = /^[A-Za-z0-9._-]{1,64}$/;

new Handler()
  .on('upper', (request) => {
    const data = request.data;
    if (data === null || typeof data !== 'object' || Array.isArray(data) || typeof data.text !== 'string') {
      throw new BesterError('bad_request', 'data must be an object with a string field "text"');
    }
    const { forward, ...rest } = data;
    const out = { ...rest, text: data.text.toUpperCase() };
    if (forward === undefined) return out;
    if (typeof forward !== 'string' || !TYPE_NAME.test(forward)) {
      throw new BesterError('bad_request', 'data.forward must be a type name: 1 to 64 of A-Z a-z 0-9 . _ -');
    }
    return request.sendHandler(forward, out);
  })
  .run();
