//! The duration (`250ms`, `30s`, `5m`, `1h`) and size (`128MB`, `64MiB`) notations of
//! `projections.yaml`.

use std::time::Duration;

pub(super) const DURATION_FORMS: &str = "a positive integer followed by ms, s, m or h (e.g. 500ms, 30s, 5m, 1h)";
pub(super) const SIZE_FORMS: &str =
    "a positive integer followed by B, KB, MB, GB, KiB, MiB or GiB (e.g. 512KB, 128MB, 64MiB, 1GB)";

/// Parses `<positive integer><unit>` with unit `ms`, `s`, `m` or `h` (e.g. `250ms`,
/// `30s`, `5m`, `1h`). No spaces, signs, fractions or other units; `None` otherwise.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_number(text)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis)
}

/// Parses `<positive integer><unit>` with unit `B`, `KB`, `MB`, `GB`, `KiB`, `MiB` or
/// `GiB` into bytes; `KB`/`MB`/`GB` are 1024-based like `KiB`/`MiB`/`GiB` (`128MB` =
/// `128MiB` = 134217728). `None` for anything else.
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = split_number(text)?;
    let bytes_per_unit: u64 = match unit {
        "B" => 1,
        "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(bytes_per_unit)
}

/// Splits `123unit` into a positive integer and its unit.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    (number > 0).then_some((number, unit))
}

/// `1h`, `5m`, `30s` or `250ms`: the largest unit that shows `duration` exactly.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis > 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}
