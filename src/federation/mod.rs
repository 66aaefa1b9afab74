//! Federation: servers that identify to each other and exchange messages. This part is being built
//! in steps; [`handshake`] (peer authentication) is the first.

pub mod handshake;
