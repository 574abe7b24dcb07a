//! Standard output that tolerates a closed pipe (`projector status | head -3`): the
//! command stops quietly instead of panicking; `--json` output; and how rates read.

use std::io::Write;

/// Writes one line to stdout; exits quietly when the reader went away.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` that does not panic on a closed pipe.
#[macro_export]
macro_rules! say {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}

/// Writes `value` as pretty-printed JSON, the `--json` output of every command.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    line(format_args!("{}", serde_json::to_string_pretty(value)?));
    Ok(())
}

/// A rate as people read it: whole events per second (`1235 events/s`, not `1234.5678/s`).
pub fn rate(per_second: f64) -> String {
    format!("{:.0} events/s", per_second.max(0.0))
}

/// `{rate}` in a progress template: [`rate`] of the bar's current speed.
pub fn rate_key(state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = out.write_str(&rate(state.per_sec()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_a_whole_number_of_events_per_second() {
        assert_eq!(rate(1234.5678), "1235 events/s");
        assert_eq!(rate(0.4), "0 events/s");
        assert_eq!(rate(f64::NAN.max(0.0)), "0 events/s");
    }
}
