//! A handler in ten lines: besterd starts it with `BESTER_SOCKET` set
//! (`[handlers.echo] command = ["/path/to/echo_handler"]`); it answers every request with its
//! own data, and exits 0 when besterd closes the socket.

use bester_client::handler::{Answer, serve};

fn main() -> std::io::Result<()> {
    serve(|request| Answer::Reply(request.data().clone()))
}
