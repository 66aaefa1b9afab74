//! What `check-config` (and `serve`, as warnings) reports about a valid configuration beyond its
//! validity: peer secrets that other users of the machine can read, and handler programs that
//! cannot be found or run. These look at the machine (file modes, `PATH`), so they are kept apart
//! from the pure validation in `config.rs`.

use std::path::{Path, PathBuf};

use super::{Config, EXAMPLES_PLACEHOLDER, HandlerSource};

impl Config {
    /// For `check-config` and `serve`: peer secrets that others on this machine can read, as
    /// `(key, warning)` pairs — inline `secret`s in a configuration `file` that group or others
    /// can read, and each `secret_file` that group or others can read. Never holds a secret.
    pub fn secret_warnings(&self, file: Option<&Path>) -> Vec<(String, String)> {
        use std::os::unix::fs::PermissionsExt;
        let readable = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| m.permissions().mode() & 0o777)
                .filter(|mode| mode & 0o044 != 0)
        };
        let mut warnings = Vec::new();
        let key_files = [
            (
                "auth.token_secret_file",
                self.auth.token_secret_file.as_ref(),
            ),
            (
                "auth.jwt.hmac_secret_file",
                self.auth
                    .jwt
                    .as_ref()
                    .and_then(|j| j.hmac_secret_file.as_ref()),
            ),
        ];
        for (key, path) in key_files {
            if let Some(mode) = path.and_then(|p| readable(p)) {
                warnings.push((
                    key.to_string(),
                    format!(
                        "{} is readable by group or others (mode {mode:04o}): they can sign \
                         tokens with it; make it 0600 (or 0640 for a trusted group)",
                        path.map_or_else(String::new, |p| p.display().to_string())
                    ),
                ));
            }
        }
        for (name, peer) in &self.peers {
            let (key, path) = match &peer.secret_file {
                Some(path) => (format!("peers.{name}.secret_file"), path.as_path()),
                None => match file {
                    Some(path) => (format!("peers.{name}.secret"), path),
                    None => continue,
                },
            };
            if let Some(mode) = readable(path) {
                warnings.push((
                    key,
                    format!(
                        "{} is readable by group or others (mode {mode:04o}): they can read the \
                         peer secret; make it 0600 (or 0640 for a trusted group){}",
                        path.display(),
                        if peer.secret_file.is_none() {
                            ", or move the secret to secret_file"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        warnings
    }

    /// For `check-config`: each started handler whose program cannot be run, as
    /// `("handlers.T.command", problem)`. A program without a `/` is looked up on the handler's
    /// `PATH` (its `env` may set one), else relative to its `cwd`. A program under `{examples}`
    /// is written by besterd itself at startup and is not checked. Not part of [`Config::parse`]:
    /// the program may be installed after the configuration is written, and `serve` only warns.
    pub fn program_problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (kind, handler) in &self.handlers {
            let HandlerSource::Command { argv, env, cwd, .. } = &handler.source else {
                continue;
            };
            let Some(program) = argv.first() else {
                continue;
            };
            if program.contains(EXAMPLES_PLACEHOLDER) {
                continue;
            }
            if let Err(problem) = find_program(program, env.get("PATH"), cwd.as_deref()) {
                problems.push((format!("handlers.{kind}.command"), problem));
            }
        }
        problems
    }
}

/// Where `program` would be run from, as `execvp` finds it; else why it cannot be run.
fn find_program(
    program: &str,
    path_override: Option<&String>,
    cwd: Option<&Path>,
) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |candidate: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(candidate).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            Err("is a directory".into())
        } else if meta.permissions().mode() & 0o111 == 0 {
            Err("is not executable".into())
        } else {
            Ok(())
        }
    };
    if program.contains('/') {
        let path = match cwd {
            Some(dir) if Path::new(program).is_relative() => dir.join(program),
            _ => PathBuf::from(program),
        };
        return match runnable(&path) {
            Ok(()) => Ok(path),
            Err(e) => Err(format!("program {:?}: {e}", path.display().to_string())),
        };
    }
    let search = match path_override {
        Some(p) => Some(std::ffi::OsString::from(p)),
        None => std::env::var_os("PATH"),
    };
    let search = search.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match runnable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if candidate.exists() => {
                not_executable.get_or_insert((candidate, e));
            }
            Err(_) => {}
        }
    }
    Err(match not_executable {
        Some((candidate, e)) => format!(
            "program {program:?} found as {:?}, which {e}",
            candidate.display().to_string()
        ),
        None => format!("program {program:?} not found on PATH"),
    })
}
