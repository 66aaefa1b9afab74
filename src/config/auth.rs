//! `[auth]` and `[auth.jwt]`: the keys of token logins, validated into an [`AuthConfig`].
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
    /// `[auth.jwt]`: token logins with JWTs the application issues (off when absent).
    pub jwt: Option<FileJwt>,
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
    /// How long a resume token is valid.
    pub resume_ttl: Duration,
    /// `[auth.jwt]` as validated, if token logins are on.
    pub jwt: Option<JwtSettings>,
    /// The keys read from its files.
    pub jwt_keys: Option<Arc<JwtKeys>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_secret_file: None,
            token_key: None,
            resume_ttl: Duration::from_secs(DEFAULT_RESUME_TTL_S),
            jwt: None,
            jwt_keys: None,
        }
    }
}

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

/// Check `[auth]`, reading its key files; each problem is pushed with its key.
pub fn validate_auth(auth: FileAuth, problems: &mut Vec<(String, String)>) -> AuthConfig {
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
    AuthConfig {
        token_secret_file: auth.token_secret_file,
        token_key,
        resume_ttl: Duration::from_secs(resume_ttl_s.max(1)),
        jwt,
        jwt_keys,
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
