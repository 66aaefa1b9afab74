// dialled.js: a handler besterd dials (`connect = "/path"`): it listens on $BESTER_SOCKET.
import { Handler } from '../../index.js';

new Handler({ listen: true }).on('*', (request) => ({ type: request.type, data: request.data, user: request.user })).run();
