//! Tokens the application issues (JWT): the keys that verify them and the verification itself.
//!
//! Keys come from files named in `[auth.jwt]`: an HMAC secret (HS256), public keys in PEM
//! (Ed25519 → EdDSA, P-256 → ES256, RSA → RS256) and a JWKS file. **Each key has one algorithm**,
//! fixed when it is loaded; a token is checked only against keys of the algorithm its header
//! names, so neither `alg: none` (not an algorithm here at all) nor algorithm confusion (an RSA
//! public key used as an HMAC secret) can pass. Keys embedded in a token (`jwk`, `jku`) are never
//! used. Signatures are checked by `jsonwebtoken`; time claims against the `now` given, so the
//! verdict is the same on every thread and in tests.
//!
//! Pure apart from [`JwtKeys::load`], which reads the key files (at start and on SIGHUP).

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest token accepted, in bytes (before any decoding).
pub const MAX_TOKEN: usize = 8 * 1024;
/// Largest `info` claim, in bytes of JSON.
pub const MAX_INFO: usize = 4 * 1024;
/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash's size).
pub const MIN_HMAC_SECRET: usize = 32;

/// `[auth.jwt]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtSettings {
    /// A file holding the HS256 secret (trailing newline ignored).
    pub hmac_secret_file: Option<PathBuf>,
    /// PEM public keys (`kid` is the file name without its extension).
    pub public_keys: Vec<PathBuf>,
    /// A JWKS file (`{"keys":[…]}`).
    pub jwks_file: Option<PathBuf>,
    /// `iss` a token must carry, if set.
    pub issuer: Option<String>,
    /// `aud` a token must carry (one of its values), if set.
    pub audience: Option<String>,
    /// Seconds of clock difference allowed for `exp`, `nbf` and `iat`.
    pub leeway_s: u64,
    /// Whether the token's user must also be in the user store.
    pub require_user: bool,
}

/// Why a token was refused. Each is a distinct error code on the wire (`PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, an algorithm besterd does not take (`none` among them), or claims of the wrong
    /// shape; the text says which, never quoting the token.
    Malformed(String),
    /// No configured key has the token's `kid`, or none is of its algorithm.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` or `iat` is in the future.
    NotYetValid,
    /// `aud` is not the configured audience.
    WrongAudience,
    /// `iss` is not the configured issuer.
    WrongIssuer,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenError::UnknownKey => f.write_str("no key for this token (kid or algorithm)"),
            TokenError::BadSignature => f.write_str("the token's signature does not verify"),
            TokenError::Expired => f.write_str("the token has expired"),
            TokenError::NotYetValid => f.write_str("the token is not valid yet"),
            TokenError::WrongAudience => f.write_str("the token is for another audience"),
            TokenError::WrongIssuer => f.write_str("the token is from another issuer"),
        }
    }
}

/// A verified token: who, until when, and the session's authorisation data.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `sub`.
    pub user: String,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
    /// The `info` claim (a JSON object of at most [`MAX_INFO`] bytes), if any.
    pub info: Option<Box<RawValue>>,
}

/// One verification key and the one algorithm it verifies.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The loaded keys and the claims checks of `[auth.jwt]`.
pub struct JwtKeys {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<_> = self.keys.iter().map(|k| (&k.kid, k.alg)).collect();
        f.debug_struct("JwtKeys").field("keys", &keys).finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    info: Option<Box<RawValue>>,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `kid` of a PEM key file: its name without the extension.
fn kid_of(path: &Path) -> Option<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
}

/// A PEM public key and the algorithm its kind implies.
fn pem_key(path: &Path) -> Result<(Algorithm, DecodingKey), String> {
    let pem = read(path)?;
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((Algorithm::EdDSA, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        // An uncompressed P-256 point is 65 bytes; other curves are not taken.
        return match key.try_get_as_bytes() {
            Ok(point) if point.len() == 65 => Ok((Algorithm::ES256, key)),
            _ => Err(format!(
                "{}: only P-256 elliptic-curve keys (ES256) are taken",
                path.display()
            )),
        };
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    Err(format!(
        "{}: not a PEM public key (Ed25519, P-256 or RSA)",
        path.display()
    ))
}

/// The keys of a JWKS file, each with its one algorithm.
fn jwks_keys(path: &Path) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(&read(path)?)
        .map_err(|e| format!("{}: not a JWKS file: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let named = |what: &str| format!("{}: key {i}: {what}", path.display());
        let implied = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(named(
                    "symmetric keys do not belong in a JWKS file (use hmac_secret_file)",
                ));
            }
            _ => return Err(named("only RSA, P-256 and Ed25519 keys are taken")),
        };
        let named_alg = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(other) => return Err(named(&format!("algorithm {other:?} is not taken"))),
        };
        if named_alg.is_some_and(|a| a != implied) {
            return Err(named("its alg does not fit its key type"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| named(&e.to_string()))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg: implied,
            key,
        });
    }
    Ok(keys)
}

impl JwtKeys {
    /// Read every key file of `settings`. At least one key is required.
    pub fn load(settings: &JwtSettings) -> Result<JwtKeys, String> {
        let mut keys = Vec::new();
        if let Some(path) = &settings.hmac_secret_file {
            let mut secret = read(path)?;
            while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                secret.pop();
            }
            if secret.len() < MIN_HMAC_SECRET {
                return Err(format!(
                    "{}: an HS256 secret must be at least {MIN_HMAC_SECRET} bytes",
                    path.display()
                ));
            }
            let key = DecodingKey::from_secret(&secret).map_err(|e| e.to_string())?;
            keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key,
            });
        }
        for path in &settings.public_keys {
            let (alg, key) = pem_key(path)?;
            keys.push(Key {
                kid: kid_of(path),
                alg,
                key,
            });
        }
        if let Some(path) = &settings.jwks_file {
            keys.extend(jwks_keys(path)?);
        }
        if keys.is_empty() {
            return Err(
                "[auth.jwt] names no key: give hmac_secret_file, public_keys or jwks_file".into(),
            );
        }
        Ok(JwtKeys {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway_s,
        })
    }

    /// How many keys are loaded.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is loaded (never, once [`JwtKeys::load`] succeeded).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify `token` at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed(format!("over {MAX_TOKEN} bytes")));
        }
        let header = decode_header(token).map_err(|e| TokenError::Malformed(describe(&e)))?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let mut validation = Validation::new(header.alg);
        // Time claims are checked below against `now`; presence of exp too, with its own code.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = self.audience.is_some();
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        let mut last = TokenError::BadSignature;
        for key in candidates {
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return self.claims(data.claims, now),
                Err(e) => {
                    last = refusal(&e);
                    if last != TokenError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn claims(&self, claims: Claims, now: u64) -> Result<Verified, TokenError> {
        let user = match claims.sub {
            Some(serde_json::Value::String(sub)) if !sub.is_empty() => sub,
            Some(_) => return Err(TokenError::Malformed("sub must be a string".into())),
            None => return Err(TokenError::Malformed("sub is required".into())),
        };
        let expires = match claims.exp.as_ref().map(seconds) {
            Some(Some(exp)) => exp,
            Some(None) => return Err(TokenError::Malformed("exp must be a number".into())),
            None => return Err(TokenError::Malformed("exp is required".into())),
        };
        if expires.saturating_add(self.leeway) <= now {
            return Err(TokenError::Expired);
        }
        for (name, value) in [("nbf", &claims.nbf), ("iat", &claims.iat)] {
            match value.as_ref().map(seconds) {
                Some(Some(at)) if at > now.saturating_add(self.leeway) => {
                    return Err(TokenError::NotYetValid);
                }
                Some(None) => {
                    return Err(TokenError::Malformed(format!("{name} must be a number")));
                }
                _ => {}
            }
        }
        if let Some(info) = &claims.info {
            if info.get().len() > MAX_INFO {
                return Err(TokenError::Malformed(format!(
                    "info is over {MAX_INFO} bytes"
                )));
            }
            if !info.get().trim_start().starts_with('{') {
                return Err(TokenError::Malformed("info must be an object".into()));
            }
        }
        Ok(Verified {
            user,
            expires,
            info: claims.info,
        })
    }
}

/// A NumericDate: whole seconds (a fraction is cut off, as RFC 7519 allows).
fn seconds(value: &serde_json::Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// What a jsonwebtoken error means for the client.
fn refusal(e: &jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => TokenError::BadSignature,
        K::InvalidAudience => TokenError::WrongAudience,
        K::InvalidIssuer => TokenError::WrongIssuer,
        K::MissingRequiredClaim(claim) if claim == "aud" => TokenError::WrongAudience,
        K::MissingRequiredClaim(claim) if claim == "iss" => TokenError::WrongIssuer,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        _ => TokenError::Malformed(describe(e)),
    }
}

/// A jsonwebtoken error in words that never quote the token.
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "not three base64url parts".into(),
        K::Base64(_) => "not base64url".into(),
        K::Json(_) | K::Utf8(_) => "its header or claims are not JSON of the right shape".into(),
        K::InvalidAlgorithmName | K::UnsupportedAlgorithm | K::InvalidAlgorithm => {
            "an algorithm besterd does not take".into()
        }
        K::InvalidClaimFormat(claim) => format!("{claim} has the wrong type"),
        _ => "not a token besterd can read".into(),
    }
}

#[cfg(test)]
mod tests;
