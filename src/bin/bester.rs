//! `bester`: the command-line client. `send` logs in, sends one message and prints the reply;
//! `listen` logs in and prints every message pushed to the user, one JSON line each.
//!
//! The password comes from the URI, else `BESTER_PASSWORD`, else the first line of standard input
//! with `--password-stdin`, else a prompt on the terminal.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;

use besterd::client::{Client, Uri};

/// Talk to a besterd server.
#[derive(Debug, Parser)]
#[command(name = "bester", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Read the password from the first line of standard input.
    #[arg(long, global = true)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send one message of TYPE with JSON DATA and print the reply (exit 1 if it is an error).
    Send {
        /// bester://user[:password]@host:port
        uri: String,
        /// The payload type, e.g. echo.
        #[arg(name = "TYPE")]
        kind: String,
        /// The payload data as JSON (default null).
        data: Option<String>,
        /// The message id.
        #[arg(long, default_value = "1")]
        id: String,
    },
    /// Print every message pushed to this user until the connection closes.
    Listen {
        /// bester://user[:password]@host:port
        uri: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bester: {e}");
            ExitCode::FAILURE
        }
    }
}

fn password(uri: &Uri, from_stdin: bool) -> Result<String, String> {
    if let Some(p) = &uri.password {
        return Ok(p.clone());
    }
    if let Ok(p) = std::env::var("BESTER_PASSWORD") {
        return Ok(p);
    }
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    rpassword::prompt_password(format!("password for {}: ", uri.user)).map_err(|e| e.to_string())
}

fn connect(uri_text: &str, password_stdin: bool) -> Result<Client, String> {
    let uri = Uri::parse(uri_text)?;
    let pw = password(&uri, password_stdin)?;
    let (client, reply) = Client::login(uri.address.as_str(), &uri.user, &pw)
        .map_err(|e| format!("{}: {e}", uri.address))?;
    if reply["header"]["status"] != "ok" {
        return Err(format!("login refused: {}", reply["data"]));
    }
    Ok(client)
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Cmd::Send {
            uri,
            kind,
            data,
            id,
        } => {
            let data: Value = match data {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|e| format!("DATA is not JSON: {e}"))?
                }
                None => Value::Null,
            };
            let mut client = connect(&uri, cli.password_stdin)?;
            let reply = client
                .request(&id, &kind, &data)
                .map_err(|e| e.to_string())?;
            println!("{reply}");
            Ok(if reply["header"]["status"] == "ok" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Listen { uri } => {
            let mut client = connect(&uri, cli.password_stdin)?;
            eprintln!("bester: listening (Ctrl-C to stop)");
            while let Some(frame) = client.recv().map_err(|e| e.to_string())? {
                println!("{frame}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
