//! A client in ten lines: `cargo run -p bester-client --example request -- bester://127.0.0.1:2222
//! demo demo echo '{"hello":"world"}'` logs in, sends one request and prints its reply's data.

use bester_client::{Login, Options, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, user, password, kind, data] = &args[..] else {
        return Err("usage: request URL USER PASSWORD TYPE DATA".into());
    };
    let login = Login::Password {
        user: user.clone(),
        password: password.clone(),
    };
    let mut session = Session::connect(url, login, Options::default())?;
    println!("{}", session.request(kind, &serde_json::from_str(data)?)?);
    Ok(())
}
