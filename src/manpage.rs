//! Man pages from the clap definitions of `besterd` and `bester` (clap_mangen).
//!
//! Each binary answers a hidden first argument, `__man DIR`, by writing one roff page per
//! command and subcommand into DIR (`besterd.1`, `besterd-serve.1`, `besterd-user-add.1`, ...)
//! and exiting. The Debian package is built from these pages (scripts/package-test.sh), so the
//! pages always say what the installed binaries accept. `__man` is not a clap subcommand: it
//! never shows in `--help` nor in the pages themselves.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

/// The hidden first argument that asks for the man pages.
pub const ARG: &str = "__man";

/// When the command line is `PROG __man DIR`, write the pages of `C` into DIR and return the
/// exit code; otherwise `None` (parse the command line as usual).
pub fn from_args<C: CommandFactory>(args: &[OsString]) -> Option<ExitCode> {
    if args.get(1).is_none_or(|a| a != ARG) {
        return None;
    }
    let [_, _, dir] = args else {
        eprintln!("usage: {} {ARG} DIR", C::command().get_name());
        return Some(ExitCode::from(64));
    };
    Some(match write_all(C::command(), Path::new(dir)) {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "cannot write the man pages into {}: {e}",
                Path::new(dir).display()
            );
            ExitCode::FAILURE
        }
    })
}

/// Write the page of `cmd` and of each of its (visible) subcommands, at any depth, into `dir`
/// (which must exist); return the files written. Pages carry no date, so that two builds of the
/// same source give the same pages.
pub fn write_all(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let source = format!("besterd {}", env!("CARGO_PKG_VERSION"));
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_one(&cmd, dir, &source, &mut written)?;
    Ok(written)
}

fn write_one(
    cmd: &clap::Command,
    dir: &Path,
    source: &str,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(source)
        .manual("besterd manual");
    written.push(man.generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_one(sub, dir, source, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_gets_a_page_that_names_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_all(crate::cli::Cli::command(), dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "besterd.1",
            "besterd-serve.1",
            "besterd-check-config.1",
            "besterd-user.1",
            "besterd-user-add.1",
            "besterd-ctl.1",
            "besterd-ctl-status.1",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        let serve = std::fs::read_to_string(dir.path().join("besterd-serve.1")).unwrap();
        assert!(serve.contains("ready\\-file"), "{serve}");
        assert!(serve.contains(&format!("besterd {}", env!("CARGO_PKG_VERSION"))));
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    }

    #[test]
    fn only_the_exact_hidden_argument_asks_for_pages() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(from_args::<crate::cli::Cli>(&args(&["besterd", "serve"])).is_none());
        assert!(from_args::<crate::cli::Cli>(&args(&["besterd"])).is_none());
        assert!(from_args::<crate::cli::Cli>(&args(&["besterd", "__man"])).is_some());
    }
}
