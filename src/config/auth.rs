//! `[auth]` and `[auth.jwt]`: the keys of token logins and the auth handler, validated into an
//! [`AuthConfig`].
//!
//! The key files are read here, when the configuration is loaded: at start, by `check-config`,
//! and on every reload (SIGHUP), so a rotated JWKS file or secret takes effect with a reload, and
//! a key file that cannot be read or holds no usable key fails the load like any other bad key (a
//! reload then keeps the running configuration and its keys). Never logs a key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::jwt::{JwtKeys, JwtSettings};
use crate::auth::resume::TokenKey;

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    /// The key that signs resume tokens (shared by servers that accept each other's tokens).
    pub token_secret_file: Option<PathBuf>,
    /// How long a resume token is valid, in seconds.
    pub resume_ttl_s: Option<u64>,
    /// Where the logged-out sessions are kept across restarts.
    pub revoked_file: Option<PathBuf>,
    /// `[auth.jwt]`: token logins with JWTs the application issues (off when absent).
    pub jwt: Option<FileJwt>,
    /// The handler type that decides logins the server cannot (off when absent).
    pub handler: Option<String>,
    /// Which logins go to it: `"others"` (no built-in shape) or `"all"`.
    pub handle: Option<Handle>,
    /// How long it has to answer a login, in milliseconds.
    pub auth_timeout_ms: Option<u64>,
    /// Most logins in flight to it at once.
    pub max_inflight: Option<usize>,
}

/// `[auth] handle`: which identifies the auth handler decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handle {
    /// Those whose `authentication` is none of the built-in shapes.
    #[default]
    Others,
    /// Every client identify with `authentication` (resume tokens aside: besterd's own).
    All,
}

/// The auth handler, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHandler {
    /// Its handler type (a configured `[handlers.T]`).
    pub kind: String,
    /// Which logins it decides.
    pub handle: Handle,
}

/// `[auth.jwt]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJwt {
    /// A file holding the HS256 secret.
    pub hmac_secret_file: Option<PathBuf>,
    /// PEM public key files (EdDSA, ES256, RS256); each one's `kid` is its file name's stem.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// A JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// The `iss` tokens must carry.
    pub issuer: Option<String>,
    /// The `aud` tokens must carry.
    pub audience: Option<String>,
    /// Clock difference allowed, in seconds.
    pub leeway_s: Option<u64>,
    /// Whether `sub` must be a user in the user store.
    pub require_user: Option<bool>,
}

/// The validated `[auth]` section.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Where the resume token key was read from (`None`: a random key per start).
    pub token_secret_file: Option<PathBuf>,
    /// The key read from it.
    pub token_key: Option<TokenKey>,
    /// `revoked_file` as written (see [`super::Config::revoked_file`] for the default).
    pub revoked_file: Option<PathBuf>,
    /// How long a resume token is valid.
    pub resume_ttl: Duration,
    /// `[auth.jwt]` as validated, if token logins are on.
    pub jwt: Option<JwtSettings>,
    /// The keys read from its files.
    pub jwt_keys: Option<Arc<JwtKeys>>,
    /// `[auth] handler`, if logins go to one.
    pub handler: Option<AuthHandler>,
    /// How long the auth handler has to answer a login.
    pub login_timeout: Duration,
    /// Most logins in flight to the auth handler.
    pub max_logins: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_secret_file: None,
            token_key: None,
            revoked_file: None,
            resume_ttl: Duration::from_secs(DEFAULT_RESUME_TTL_S),
            jwt: None,
            jwt_keys: None,
            handler: None,
            login_timeout: Duration::from_millis(DEFAULT_AUTH_TIMEOUT_MS),
            max_logins: DEFAULT_MAX_LOGINS,
        }
    }
}

/// `[auth] auth_timeout_ms` when not given.
pub const DEFAULT_AUTH_TIMEOUT_MS: u64 = 5_000;
/// `[auth] max_inflight` when not given.
pub const DEFAULT_MAX_LOGINS: usize = 64;

/// `[auth] resume_ttl_s` when not given: an hour.
pub const DEFAULT_RESUME_TTL_S: u64 = 3600;
/// `[auth.jwt] leeway_s` when not given.
pub const DEFAULT_LEEWAY_S: u64 = 30;

impl AuthConfig {
    /// What the running configuration's keys are compared by (a reload that changed nothing
    /// else still reads the files again).
    pub fn settings(&self) -> (Option<&PathBuf>, Duration, Option<&JwtSettings>) {
        (
            self.token_secret_file.as_ref(),
            self.resume_ttl,
            self.jwt.as_ref(),
        )
    }
}

/// Check `[auth]`, reading its key files; each problem is pushed with its key. `handlers`: the
/// configured handler types (the auth handler must be one).
pub fn validate_auth<'a>(
    auth: FileAuth,
    mut handlers: impl Iterator<Item = &'a String>,
    problems: &mut Vec<(String, String)>,
) -> AuthConfig {
    let resume_ttl_s = auth.resume_ttl_s.unwrap_or(DEFAULT_RESUME_TTL_S);
    if resume_ttl_s == 0 {
        problems.push(("auth.resume_ttl_s".into(), "must be at least 1".into()));
    }
    let token_key =
        auth.token_secret_file
            .as_deref()
            .and_then(|path| match TokenKey::from_file(path) {
                Ok(key) => Some(key),
                Err(e) => {
                    problems.push(("auth.token_secret_file".into(), e));
                    None
                }
            });
    let (jwt, jwt_keys) = match auth.jwt {
        None => (None, None),
        Some(j) => {
            let settings = JwtSettings {
                hmac_secret_file: j.hmac_secret_file,
                public_keys: j.public_keys,
                jwks_file: j.jwks_file,
                issuer: j.issuer,
                audience: j.audience,
                leeway_s: j.leeway_s.unwrap_or(DEFAULT_LEEWAY_S),
                require_user: j.require_user.unwrap_or(false),
            };
            let keys = match JwtKeys::load(&settings) {
                Ok(keys) => Some(Arc::new(keys)),
                Err(e) => {
                    problems.push(("auth.jwt".into(), e));
                    None
                }
            };
            (Some(settings), keys)
        }
    };
    let handler = match (auth.handler, auth.handle) {
        (Some(kind), handle) => {
            if !handlers.any(|h| *h == kind) {
                problems.push((
                    "auth.handler".into(),
                    format!("{kind:?} is not a configured handler type ([handlers.{kind}])"),
                ));
            }
            Some(AuthHandler {
                kind,
                handle: handle.unwrap_or_default(),
            })
        }
        (None, Some(_)) => {
            problems.push(("auth.handle".into(), "needs auth.handler".into()));
            None
        }
        (None, None) => None,
    };
    let timeout_ms = auth.auth_timeout_ms.unwrap_or(DEFAULT_AUTH_TIMEOUT_MS);
    if !(1..=600_000).contains(&timeout_ms) {
        problems.push(("auth.auth_timeout_ms".into(), "must be 1 to 600000".into()));
    }
    let max_logins = auth.max_inflight.unwrap_or(DEFAULT_MAX_LOGINS);
    if max_logins == 0 {
        problems.push(("auth.max_inflight".into(), "must be at least 1".into()));
    }
    AuthConfig {
        token_secret_file: auth.token_secret_file,
        token_key,
        revoked_file: auth.revoked_file,
        resume_ttl: Duration::from_secs(resume_ttl_s.max(1)),
        jwt,
        jwt_keys,
        handler,
        login_timeout: Duration::from_millis(timeout_ms.clamp(1, 600_000)),
        max_logins: max_logins.max(1),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(text: &str) -> Vec<(String, String)> {
        Config::parse(text, "test").unwrap_err().problems
    }

    #[test]
    fn token_logins_are_off_by_default_and_resume_tokens_last_an_hour() {
        let config = Config::parse("", "test").unwrap();
        assert!(config.auth.jwt.is_none() && config.auth.jwt_keys.is_none());
        assert!(config.auth.token_key.is_none());
        assert_eq!(config.auth.resume_ttl.as_secs(), 3600);
    }

    #[test]
    fn bad_key_files_are_reported_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "short\n").unwrap();
        let text = format!(
            "[auth]\ntoken_secret_file = {short:?}\nresume_ttl_s = 0\n[auth.jwt]\nhmac_secret_file = {short:?}\n"
        );
        let found = problems(&text);
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["auth.resume_ttl_s", "auth.token_secret_file", "auth.jwt"]
        );
        assert!(found[1].1.ends_with("at least 32 bytes"), "{found:?}");
        assert!(found[2].1.ends_with("at least 32 bytes"), "{found:?}");
        let none = problems("[auth.jwt]\nissuer = \"x\"\n");
        assert_eq!(none[0].0, "auth.jwt");
        assert!(none[0].1.contains("names no key"), "{none:?}");
    }

    #[test]
    fn the_auth_handler_is_a_configured_type() {
        let config = Config::parse("", "test").unwrap();
        assert!(config.auth.handler.is_none());
        assert_eq!(config.auth.login_timeout.as_millis(), 5000);
        assert_eq!(config.auth.max_logins, 64);
        let text = "[handlers.keys]\ncommand = [\"true\"]\n[auth]\nhandler = \"keys\"\nhandle = \"all\"\nauth_timeout_ms = 250\nmax_inflight = 3\n";
        let config = Config::parse(text, "test").unwrap();
        let handler = config.auth.handler.as_ref().unwrap();
        assert_eq!(
            (handler.kind.as_str(), handler.handle),
            ("keys", super::Handle::All)
        );
        assert_eq!(config.auth.login_timeout.as_millis(), 250);
        assert_eq!(config.auth.max_logins, 3);
        assert_eq!(
            problems("[auth]\nhandler = \"nobody\"\n"),
            [(
                "auth.handler".to_string(),
                "\"nobody\" is not a configured handler type ([handlers.nobody])".to_string()
            )]
        );
        assert_eq!(
            problems("[auth]\nhandle = \"all\"\nauth_timeout_ms = 0\nmax_inflight = 0\n"),
            [
                ("auth.handle".to_string(), "needs auth.handler".to_string()),
                (
                    "auth.auth_timeout_ms".to_string(),
                    "must be 1 to 600000".to_string()
                ),
                (
                    "auth.max_inflight".to_string(),
                    "must be at least 1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn good_key_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{}\n", "s".repeat(40))).unwrap();
        let text = format!(
            "[auth]\ntoken_secret_file = {secret:?}\nresume_ttl_s = 60\n[auth.jwt]\nhmac_secret_file = {secret:?}\naudience = \"app\"\nrequire_user = true\n"
        );
        let config = Config::parse(&text, "test").unwrap();
        assert!(config.auth.token_key.is_some());
        assert_eq!(config.auth.resume_ttl.as_secs(), 60);
        let jwt = config.auth.jwt.as_ref().unwrap();
        assert!(jwt.require_user && jwt.leeway_s == 30);
        assert_eq!(config.auth.jwt_keys.as_ref().unwrap().len(), 1);
    }
}
