//! Tokens minted with `jsonwebtoken`'s own encoder and keys made by rcgen; the integration tests
//! (tests/token_login.rs) mint theirs with PyJWT.

use super::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::io::Write;

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }
}

fn hs_settings(files: &Files) -> JwtSettings {
    JwtSettings {
        hmac_secret_file: Some(files.write("hs.secret", &[SECRET, b"\n"].concat())),
        leeway_s: 5,
        ..JwtSettings::default()
    }
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

fn good() -> Value {
    json!({"sub":"alice","exp":NOW + 60,"iat":NOW - 1,"info":{"workspace":111}})
}

#[test]
fn an_hs256_token_gives_its_user_expiry_and_info() {
    let files = Files::new();
    let keys = JwtKeys::load(&hs_settings(&files)).unwrap();
    let verified = keys.verify(&hs(&good()), NOW).unwrap();
    assert_eq!(verified.user, "alice");
    assert_eq!(verified.expires, NOW + 60);
    assert_eq!(verified.info.unwrap().get(), r#"{"workspace":111}"#);
}

#[test]
fn time_claims_are_checked_with_the_leeway() {
    let files = Files::new();
    let keys = JwtKeys::load(&hs_settings(&files)).unwrap();
    let at = |claims: Value| keys.verify(&hs(&claims), NOW).map(|v| v.user);
    assert_eq!(
        at(json!({"sub":"a","exp":NOW - 6})),
        Err(TokenError::Expired)
    );
    assert_eq!(
        at(json!({"sub":"a","exp":NOW - 5})),
        Err(TokenError::Expired)
    );
    assert_eq!(at(json!({"sub":"a","exp":NOW - 4})), Ok("a".into()));
    assert_eq!(
        at(json!({"sub":"a","exp":NOW + 60,"nbf":NOW + 6})),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        at(json!({"sub":"a","exp":NOW + 60,"nbf":NOW + 5})),
        Ok("a".into())
    );
    assert_eq!(
        at(json!({"sub":"a","exp":NOW + 60,"iat":NOW + 100})),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        at(json!({"sub":"a"})),
        Err(TokenError::Malformed("exp is required".into()))
    );
    assert_eq!(
        at(json!({"sub":"a","exp":"tomorrow"})),
        Err(TokenError::Malformed("exp must be a number".into()))
    );
    assert_eq!(
        at(json!({"exp":NOW + 60})),
        Err(TokenError::Malformed("sub is required".into()))
    );
}

#[test]
fn tampered_tokens_none_and_unknown_keys_are_refused() {
    let files = Files::new();
    let keys = JwtKeys::load(&hs_settings(&files)).unwrap();
    let token = hs(&good());
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged = b64.encode(json!({"sub":"root","exp":NOW + 60}).to_string());
    assert_eq!(
        keys.verify(&format!("{head}.{forged}.{signature}"), NOW)
            .map(|v| v.user),
        Err(TokenError::BadSignature)
    );
    let none = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    assert!(matches!(
        keys.verify(&format!("{none}.{forged}."), NOW),
        Err(TokenError::Malformed(_))
    ));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("other".into());
    let with_kid = encode(&header, &good(), &EncodingKey::from_secret(SECRET).unwrap()).unwrap();
    assert_eq!(
        keys.verify(&with_kid, NOW).map(|v| v.user),
        Err(TokenError::UnknownKey)
    );
    for garbage in ["", "abc", "a.b", "a.b.c.d", &"x".repeat(MAX_TOKEN + 1)] {
        assert!(
            matches!(keys.verify(garbage, NOW), Err(TokenError::Malformed(_))),
            "{garbage}"
        );
    }
}

#[test]
fn audience_issuer_and_info_are_checked() {
    let files = Files::new();
    let settings = JwtSettings {
        issuer: Some("https://app.example".into()),
        audience: Some("besterd".into()),
        ..hs_settings(&files)
    };
    let keys = JwtKeys::load(&settings).unwrap();
    let at = |claims: Value| keys.verify(&hs(&claims), NOW).map(|v| v.user);
    let base = json!({"sub":"a","exp":NOW + 60,"iss":"https://app.example","aud":"besterd"});
    assert_eq!(at(base.clone()), Ok("a".into()));
    let mut c = base.clone();
    c["aud"] = json!(["other", "besterd"]);
    assert_eq!(at(c), Ok("a".into()));
    let mut c = base.clone();
    c["aud"] = json!("other");
    assert_eq!(at(c), Err(TokenError::WrongAudience));
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(at(c), Err(TokenError::WrongAudience));
    let mut c = base.clone();
    c["iss"] = json!("https://evil.example");
    assert_eq!(at(c), Err(TokenError::WrongIssuer));
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(at(c), Err(TokenError::WrongIssuer));
    let mut c = base.clone();
    c["info"] = json!([1]);
    assert_eq!(
        at(c),
        Err(TokenError::Malformed("info must be an object".into()))
    );
    let mut c = base;
    c["info"] = json!({"pad": "x".repeat(MAX_INFO)});
    assert_eq!(
        at(c),
        Err(TokenError::Malformed(format!(
            "info is over {MAX_INFO} bytes"
        )))
    );
}

/// An Ed25519 and a P-256 key pair made by rcgen: (private PKCS#8 PEM, public SPKI PEM).
fn pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let kp = rcgen::KeyPair::generate_for(alg).unwrap();
    (kp.serialize_pem(), kp.public_key_pem())
}

#[test]
fn eddsa_and_es256_keys_verify_their_own_algorithm_only() {
    let files = Files::new();
    let (ed_private, ed_public) = pair(&rcgen::PKCS_ED25519);
    let (ec_private, ec_public) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let settings = JwtSettings {
        public_keys: vec![
            files.write("ed.pem", ed_public.as_bytes()),
            files.write("ec.pem", ec_public.as_bytes()),
        ],
        ..JwtSettings::default()
    };
    let keys = JwtKeys::load(&settings).unwrap();
    assert_eq!(keys.len(), 2);
    let ed = encode(
        &Header::new(Algorithm::EdDSA),
        &good(),
        &EncodingKey::from_ed_pem(ed_private.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(keys.verify(&ed, NOW).unwrap().user, "alice");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec".into());
    let ec = encode(
        &header,
        &good(),
        &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(keys.verify(&ec, NOW).unwrap().user, "alice");
    // The kid names the Ed25519 key: an ES256 token cannot be checked with it.
    header.kid = Some("ed".into());
    let wrong_kid = encode(
        &header,
        &good(),
        &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        keys.verify(&wrong_kid, NOW).map(|v| v.user),
        Err(TokenError::UnknownKey)
    );
    // Algorithm confusion: the public key's PEM used as an HS256 secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &good(),
        &EncodingKey::from_secret(ec_public.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        keys.verify(&confused, NOW).map(|v| v.user),
        Err(TokenError::UnknownKey)
    );
    // With an HS256 secret configured as well, the confused token still fails its signature.
    let both = JwtKeys::load(&JwtSettings {
        public_keys: settings.public_keys.clone(),
        ..hs_settings(&files)
    })
    .unwrap();
    assert_eq!(
        both.verify(&confused, NOW).map(|v| v.user),
        Err(TokenError::BadSignature)
    );
    // Another key pair's token with the same kid does not verify.
    let (other_private, _) = pair(&rcgen::PKCS_ED25519);
    let other = encode(
        &Header::new(Algorithm::EdDSA),
        &good(),
        &EncodingKey::from_ed_pem(other_private.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        keys.verify(&other, NOW).map(|v| v.user),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn a_jwks_file_gives_keys_by_kid_and_bad_files_are_named() {
    let files = Files::new();
    let (private, public) = pair(&rcgen::PKCS_ED25519);
    let der = rcgen::KeyPair::from_pem(&private)
        .unwrap()
        .public_key_raw()
        .to_vec();
    use base64::Engine;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der);
    let jwks = json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":x,"kid":"k1","alg":"EdDSA"}]});
    let settings = JwtSettings {
        jwks_file: Some(files.write("keys.json", jwks.to_string().as_bytes())),
        ..JwtSettings::default()
    };
    let keys = JwtKeys::load(&settings).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let token = encode(
        &header,
        &good(),
        &EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(keys.verify(&token, NOW).unwrap().user, "alice");
    let _ = public;
    let bad = |name: &str, body: &str| {
        JwtKeys::load(&JwtSettings {
            jwks_file: Some(files.write(name, body.as_bytes())),
            ..JwtSettings::default()
        })
        .unwrap_err()
    };
    let oct = bad("oct.json", r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#);
    assert!(
        oct.ends_with("key 0: symmetric keys do not belong in a JWKS file (use hmac_secret_file)"),
        "{oct}"
    );
    let mismatch = json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":x,"alg":"RS256"}]});
    let mismatch = bad("mismatch.json", &mismatch.to_string());
    assert!(
        mismatch.ends_with("key 0: its alg does not fit its key type"),
        "{mismatch}"
    );
    assert!(bad("junk.json", "{").contains("not a JWKS file"));
    let short = JwtKeys::load(&JwtSettings {
        hmac_secret_file: Some(files.write("short", b"short\n")),
        ..JwtSettings::default()
    })
    .unwrap_err();
    assert!(
        short.ends_with("an HS256 secret must be at least 32 bytes"),
        "{short}"
    );
    assert!(
        JwtKeys::load(&JwtSettings::default())
            .unwrap_err()
            .contains("names no key")
    );
}
