//! Passwords: the rules they follow, argon2id hashing and verification, and the argon2 work area
//! each verifier thread keeps between checks. The user store ([`super::user_store`]) keeps the
//! hashes; this module only turns passwords into hashes and checks them.
//!
//! It must not: log or keep a plaintext password, or be called from the event loop (a check
//! takes tens of milliseconds; the daemon goes through [`crate::auth::worker`]). An unknown user
//! is checked against a dummy hash so that the time taken does not tell whether the user exists.

use std::cell::RefCell;

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::user_store::{MAX_PASSWORD_LEN, StoreError};

/// Upper bounds on the argon2 parameters of a stored hash. Verification takes its parameters from
/// the stored PHC string, so these keep a hand-edited or foreign hash from making each login
/// allocate gigabytes or run for minutes. The defaults (m=19456, t=2, p=1) are far below them.
const MAX_M_COST_KIB: u32 = 256 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

/// A hash of a random 32-byte password that was thrown away, made once offline with
/// `Argon2::default()` (argon2id, v=19, m=19456, t=2, p=1). An unknown user (or one whose stored
/// hash is unusable) is verified against it so that the time taken does not reveal whether the
/// user exists. No password verifies against it.
pub(super) const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$NZzRBEWn3/y+xWAOvyX5Lw$vdHY8gp7TKpnjYQavnvXbxo7iSDTaIwpPBwK4ZQI7D0";

/// Checks a new password: 1..=1024 bytes (any characters).
pub fn validate_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        Err(StoreError::InvalidPassword("it is empty"))
    } else if password.len() > MAX_PASSWORD_LEN {
        Err(StoreError::InvalidPassword("it is longer than 1024 bytes"))
    } else {
        Ok(())
    }
}

/// Validates `password` and hashes it with argon2id (default parameters, fresh random salt),
/// returning the PHC string to store. Slow (tens of milliseconds): never call it on the event loop.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    validate_password(password)?;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

/// Parses a PHC string and checks that it is an argon2id hash we are willing to verify against.
pub(super) fn parse_phc(phc: &str) -> Result<PasswordHash, String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "algorithm is {:?}, expected \"argon2id\"",
            parsed.algorithm.as_str()
        ));
    }
    if parsed.version.is_some_and(|v| v != 0x13) {
        return Err("unsupported argon2 version (expected v=19)".to_owned());
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("the salt or the hash is missing".to_owned());
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("bad parameters: {e}"))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(format!(
            "parameters too expensive (limits: m={MAX_M_COST_KIB}, t={MAX_T_COST}, p={MAX_P_COST})"
        ));
    }
    Ok(parsed)
}

pub(super) fn check_phc(name: &str, phc: &str) -> Result<(), StoreError> {
    parse_phc(phc)
        .map(drop)
        .map_err(|reason| StoreError::InvalidHash {
            name: name.to_owned(),
            reason,
        })
}

thread_local! {
    /// This thread's argon2 work area (19 MiB at the default parameters), reused from one check
    /// to the next: a login costs no 19 MiB allocation and no fresh page faults, whatever the
    /// allocator. Only verifier threads (and the admin command) ever check passwords.
    static WORK_AREA: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Work areas larger than this (64 MiB) are used once and not kept.
const KEEP_WORK_AREA_BLOCKS: usize = 64 * 1024;

/// Bytes of argon2 work area this thread keeps between checks.
pub fn work_area_bytes() -> usize {
    WORK_AREA.with_borrow(|area| area.capacity() * std::mem::size_of::<Block>())
}

/// Give this thread's argon2 work area back to the system (the next check allocates a new one).
pub fn release_work_area() {
    WORK_AREA.with_borrow_mut(|area| *area = Vec::new());
}

/// Recompute an argon2id hash of `password` with the parameters and salt of `parsed`, in this
/// thread's reused work area, and compare it with the stored output in constant time.
fn argon2_matches(parsed: &PasswordHash, password: &[u8]) -> Result<bool, String> {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err("the salt or the hash is missing".to_owned());
    };
    let params = Params::try_from(parsed).map_err(|e| e.to_string())?;
    let blocks = params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = vec![0u8; expected.len()];
    WORK_AREA
        .with_borrow_mut(|area| {
            if area.len() < blocks {
                area.resize(blocks, Block::default());
            }
            let result = argon2.hash_password_into_with_memory(
                password,
                salt,
                &mut out,
                &mut area[..blocks],
            );
            if area.len() > KEEP_WORK_AREA_BLOCKS {
                *area = Vec::new();
            }
            result
        })
        .map_err(|e| e.to_string())?;
    let computed = Output::new(&out).map_err(|e| e.to_string())?;
    // Output's equality is constant-time.
    Ok(computed == *expected)
}

/// Spends one argon2 verification on the dummy hash, so a rejection costs as much as a real check.
fn burn_dummy_verify(password: &str) {
    if let Ok(dummy) = PasswordHash::new(DUMMY_PHC) {
        let _ = argon2_matches(&dummy, password.as_bytes());
    }
}

/// Checks `password` for `username` against `stored`, the user's PHC hash (`None`: no such user).
///
/// Always runs exactly one argon2 verification (against a dummy hash when the user is unknown or
/// the stored hash is unusable), so the time taken does not reveal whether the user exists; the
/// comparison itself is constant-time (argon2's). An unusable stored hash is logged (user name
/// only) and rejects the login. Slow: never call it on the event loop.
pub fn verify_password(username: &str, stored: Option<&str>, password: &str) -> bool {
    let Some(phc) = stored else {
        burn_dummy_verify(password);
        return false;
    };
    match parse_phc(phc) {
        Ok(parsed) => match argon2_matches(&parsed, password.as_bytes()) {
            Ok(matches) => matches,
            Err(e) => {
                log::warn!("auth user={username}: password check failed: {e}");
                false
            }
        },
        Err(reason) => {
            log::warn!(
                "auth user={username}: stored password hash is unusable ({reason}); login refused"
            );
            burn_dummy_verify(password);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_uses_default_parameters() {
        let parsed = parse_phc(DUMMY_PHC).unwrap();
        let params = Params::try_from(&parsed).unwrap();
        let default = Params::default();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.version, Some(0x13));
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        // The same shape as a fresh hash, so verifying against it costs the same.
        let fresh = hash_password("x").unwrap();
        assert_eq!(fresh.len(), DUMMY_PHC.len());
        assert!(fresh.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }
}
