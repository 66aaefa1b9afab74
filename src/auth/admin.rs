//! `besterd user add|passwd|del|list`: the administrator's side of the user store. Passwords are
//! read from standard input (with `--password-stdin`, or whenever it is not a terminal) or prompted
//! for twice without echo; never taken from the command line.

use std::fmt;
use std::io::{self, BufRead, IsTerminal};
use std::path::Path;

use super::user_store::{self, StoreError};
use crate::cli::UserAction;

/// Why an admin command failed.
#[derive(Debug)]
pub enum AdminError {
    /// The store refused or failed.
    Store(StoreError),
    /// Reading the password failed.
    Input(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Store(e) => e.fmt(f),
            AdminError::Input(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

/// Run one `besterd user` action against the store at `store`.
pub fn run(store: &Path, action: &UserAction) -> Result<(), AdminError> {
    match action {
        UserAction::Add {
            name,
            password_stdin,
        } => {
            user_store::validate_username(name)?;
            let password = read_password(name, *password_stdin)?;
            user_store::add_user(store, name, &password)?;
            eprintln!("user {name} added to {}", store.display());
        }
        UserAction::Passwd {
            name,
            password_stdin,
        } => {
            if !user_store::read(store)?.contains_key(name) {
                return Err(StoreError::NoSuchUser(name.clone()).into());
            }
            let password = read_password(name, *password_stdin)?;
            user_store::set_password(store, name, &password)?;
            eprintln!("password of {name} changed");
        }
        UserAction::Del { name } => {
            user_store::remove_user(store, name)?;
            eprintln!("user {name} deleted");
        }
        UserAction::List => {
            for name in user_store::read(store)?.keys() {
                println!("{name}");
            }
        }
    }
    Ok(())
}

fn read_password(name: &str, from_stdin: bool) -> Result<String, AdminError> {
    let password = if from_stdin || !io::stdin().is_terminal() {
        let mut line = String::new();
        io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| AdminError::Input(format!("cannot read the password: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password(format!("new password for {name}: "))
            .map_err(|e| AdminError::Input(e.to_string()))?;
        let second =
            rpassword::prompt_password("again: ").map_err(|e| AdminError::Input(e.to_string()))?;
        if first != second {
            return Err(AdminError::Input("the passwords do not match".into()));
        }
        first
    };
    user_store::validate_password(&password)?;
    Ok(password)
}
