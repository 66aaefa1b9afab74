// A handler for the "echo" type: answers every request with its own data.
// In besterd.toml: [handlers.echo] command = ["node", "/path/to/echo_handler.js"]
import { Handler } from 'bester-client';

new Handler().on('echo', (request) => request.data).run();
