//! Where log lines go and which ones: `-v`/`-q` on the command line, else the
//! `PROJECTOR_LOG` or `RUST_LOG` filter, else warnings and errors; colour only for a
//! person at a terminal who has not set `NO_COLOR`.

use std::ffi::OsString;
use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// The level when neither flags nor variables say otherwise.
const DEFAULT: LevelFilter = LevelFilter::WARN;

/// The PostgreSQL driver logs every statement with its parameters at debug level:
/// decrypted fields a projection writes, payloads, keys' wraps. Never below this level
/// unless a filter names the driver itself.
const DRIVER_CAP: &str = "tokio_postgres=info";

/// Starts logging to stderr. `flags` is the level `-v`/`-q` asked for, when given.
pub fn init(flags: Option<LevelFilter>) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (filter, complaint) = choose(flags, var("PROJECTOR_LOG"), var("RUST_LOG"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .init();
    if let Some(complaint) = complaint {
        eprintln!("warning: {complaint}");
    }
}

/// The filter to log with, and what was wrong with a variable that could not be used.
/// The command line wins over the environment; `PROJECTOR_LOG` over `RUST_LOG`.
fn choose(
    flags: Option<LevelFilter>,
    projector_log: Option<String>,
    rust_log: Option<String>,
) -> (EnvFilter, Option<String>) {
    if let Some(level) = flags {
        return (capped(EnvFilter::default().add_directive(level.into())), None);
    }
    let (name, value) = match (projector_log, rust_log) {
        (Some(v), _) => ("PROJECTOR_LOG", v),
        (None, Some(v)) => ("RUST_LOG", v),
        (None, None) => return (EnvFilter::default().add_directive(DEFAULT.into()), None),
    };
    match EnvFilter::try_new(&value) {
        Ok(filter) if value.contains("tokio_postgres") => (filter, None),
        Ok(filter) => (capped(filter), None),
        Err(e) => (
            EnvFilter::default().add_directive(DEFAULT.into()),
            Some(format!(
                "{name}={value:?} is not a log filter ({e}); logging warnings and errors. \
                 Give a level (error, warn, info, debug, trace) or directives such as projector_local=debug"
            )),
        ),
    }
}

fn capped(filter: EnvFilter) -> EnvFilter {
    match DRIVER_CAP.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Colour codes only for a person at a terminal, never into a file or a pipe, and not
/// when `NO_COLOR` is set to anything but the empty string (https://no-color.org).
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsString::new())), "an empty NO_COLOR does not count");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn flags_win_then_projector_log_then_rust_log() {
        let shown = |f: (EnvFilter, Option<String>)| f.0.to_string();
        assert_eq!(shown(choose(Some(LevelFilter::DEBUG), Some("error".into()), None)), "tokio_postgres=info,debug");
        assert_eq!(shown(choose(None, Some("error".into()), Some("info".into()))), "tokio_postgres=info,error");
        assert_eq!(shown(choose(None, None, Some("info".into()))), "tokio_postgres=info,info");
        let named = choose(None, Some("tokio_postgres=debug".into()), None);
        assert_eq!(shown(named), "tokio_postgres=debug", "a filter naming the driver is taken as given");
        assert_eq!(shown(choose(None, None, None)), "warn");
        let (filter, complaint) = choose(None, Some("projector=nonsense".into()), None);
        assert_eq!(filter.to_string(), "warn");
        assert!(complaint.is_some_and(|c| c.contains("PROJECTOR_LOG")));
    }
}
