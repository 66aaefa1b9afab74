//! Hide a password given in a `bester://user:password@host` argument, and a token given with
//! `--token TOKEN` or `--token=TOKEN`, from other users of the machine, as curl does with `-u`: `ps` and `/proc/PID/cmdline` show the process's own argument
//! memory, so the password's bytes are overwritten there with `*` as soon as `bester` starts.
//!
//! Between `exec` and that moment the password can still be read: the README says so and shows
//! `BESTER_PASSWORD` (or `--password-stdin`) first. On targets other than Linux with glibc this
//! does nothing.

/// Overwrite, in the process's argument memory, the password of every argument that is a bester
/// URI with one. Call before anything reads the arguments (the standard library reads that memory
/// each time `std::env::args_os()` is called): callers keep their own copy first.
pub fn hide_passwords() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    imp::hide_passwords();
}

/// Where a token sits in `arg`: all of it when the argument before was `--token`, else what
/// follows `--token=`.
pub fn token_range(arg: &[u8], after_flag: bool) -> Option<std::ops::Range<usize>> {
    const FLAG: &[u8] = b"--token=";
    if after_flag {
        return (!arg.is_empty()).then_some(0..arg.len());
    }
    (arg.starts_with(FLAG) && arg.len() > FLAG.len()).then_some(FLAG.len()..arg.len())
}

/// Where the password of a bester URI sits in `arg`, read as `Uri::parse` reads it: between the
/// first `:` and the last `@` after the scheme, if there is one and it is not empty.
pub fn password_range(arg: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = [
        "bester://",
        "bester+tls://",
        "bester+ws://",
        "bester+wss://",
    ]
    .iter()
    .find(|s| arg.starts_with(s.as_bytes()))?
    .len();
    let rest = &arg[start..];
    let at = rest.iter().rposition(|b| *b == b'@')?;
    let colon = rest[..at].iter().position(|b| *b == b':')?;
    (colon + 1 < at).then(|| start + colon + 1..start + at)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::{CStr, c_char, c_int};
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    static ARGC: AtomicUsize = AtomicUsize::new(0);
    static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());

    /// glibc calls the functions of `.init_array` with `argc`, `argv` and `envp` before `main`
    /// (the standard library finds its arguments the same way).
    #[used]
    #[unsafe(link_section = ".init_array")]
    static CAPTURE: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture;

    extern "C" fn capture(argc: c_int, argv: *mut *mut c_char, _envp: *mut *mut c_char) {
        ARGC.store(usize::try_from(argc).unwrap_or(0), Ordering::Relaxed);
        ARGV.store(argv, Ordering::Relaxed);
    }

    pub fn hide_passwords() {
        let argc = ARGC.load(Ordering::Relaxed);
        let argv = ARGV.load(Ordering::Relaxed);
        if argv.is_null() {
            return;
        }
        let mut after_flag = false;
        for i in 1..argc {
            // SAFETY: glibc handed us `argc` pointers to NUL-terminated strings that live, and
            // are writable, for the whole process; nothing else writes them, and the bytes are
            // replaced in place without changing any length.
            unsafe {
                let arg = *argv.add(i);
                if arg.is_null() {
                    continue;
                }
                let bytes = CStr::from_ptr(arg).to_bytes();
                let range =
                    super::token_range(bytes, after_flag).or_else(|| super::password_range(bytes));
                after_flag = bytes == b"--token";
                if let Some(range) = range {
                    for at in range {
                        *arg.add(at) = b'*' as c_char;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{password_range, token_range};

    #[test]
    fn a_token_after_its_flag_or_its_equals_sign_is_found() {
        assert_eq!(token_range(b"eyJ.a.b", true), Some(0..7));
        assert_eq!(token_range(b"--token=eyJ.a.b", false), Some(8..15));
        assert_eq!(token_range(b"--token=", false), None);
        assert_eq!(token_range(b"eyJ.a.b", false), None);
        assert_eq!(token_range(b"", true), None);
    }

    #[test]
    fn the_password_of_each_scheme_is_found() {
        let cases: [(&str, Option<&str>); 9] = [
            ("bester://demo:pw@127.0.0.1:2222", Some("pw")),
            ("bester+tls://demo:p:w@host", Some("p:w")),
            ("bester+ws://demo:p@w@host:1/", Some("p@w")),
            ("bester+wss://u:secret@h/path@x", Some("secret@h/path")),
            ("bester://demo@127.0.0.1:2222", None),
            ("bester://demo:@127.0.0.1:2222", None),
            ("echo", None),
            ("http://u:p@host", None),
            ("{\"bester://a:b@c\":1}", None),
        ];
        for (arg, want) in cases {
            let got = password_range(arg.as_bytes()).map(|r| &arg[r]);
            assert_eq!(got, want, "{arg}");
        }
    }
}
