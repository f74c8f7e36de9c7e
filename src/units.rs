//! Byte sizes as people write them: `262144`, `256KiB`, `25MB`, `1GiB`;
//! and counts of things (`1 piece`, `2 pieces`).
//!
//! Used by the config files, the command-line flags and the search filters.
//! Decimal suffixes (kB, MB, GB) are powers of 1000, binary ones (KiB, MiB,
//! GiB) powers of 1024; `K`, `M`, `G` alone are read as binary, which is what
//! people mean by "a 256K piece". Case does not matter; but a setting
//! ([`parse_setting_size`]) refuses a unit ending in a small `b` after its
//! prefix (`Mb`, `kb`): in a networking course that is bits (an upload
//! limit of 8Mb would be eight times what was meant).

/// `1 piece`, `2 pieces`: `n` and `what`, with an `s` unless one.
pub fn count(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// Parses a byte size, or says why it is not one.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, suffix) = digits_and_unit(text);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected a whole number of bytes, optionally with a unit such as KiB, MiB, GiB, kB, MB or GB"
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    if suffix.starts_with(['.', ',']) {
        return Err("a size is a whole number of its unit (1500KB, not 1.5MB)".to_string());
    }
    let multiplier: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit {:?} in {text:?}: use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB",
                suffix.trim()
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a byte size given as a setting (a config key, a flag): as
/// [`parse_byte_size`], but a unit with a small `b` after its prefix
/// (`8Mb`, `25kb`) is refused as bits, and the bytes meant are suggested.
pub fn parse_setting_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = digits_and_unit(text.trim());
    let unit = unit.trim();
    if unit.len() >= 2 && unit.ends_with('b') && !unit.ends_with("ib") {
        return Err(format!(
            "a small b is bits, and sizes here are in bytes: write {digits}{}B \
             (8 bits make a byte: 8Mb is 1MB)",
            &unit[..unit.len() - 1]
        ));
    }
    parse_byte_size(text)
}

/// A size's leading digits, and what follows them.
fn digits_and_unit(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(split)
}

/// Formats a byte count for people, to a tenth of its unit: `262144` ->
/// `256 KiB`, `1500` -> `1.5 KiB`, `1048575` -> `1 MiB` (rounded first,
/// so never `1024.0 KiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let tenths = |value: f64| (value * 10.0).round();
    let mut value = bytes as f64;
    let mut unit = 0;
    while tenths(value) >= 10_240.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let rounded = tenths(value);
    if unit == 0 {
        format!("{bytes} B")
    } else if rounded % 10.0 == 0.0 {
        format!("{:.0} {}", rounded / 10.0, UNITS[unit])
    } else {
        format!("{:.1} {}", rounded / 10.0, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_one_or_several() {
        assert_eq!(count(1, "piece"), "1 piece");
        assert_eq!(count(0, "piece"), "0 pieces");
        assert_eq!(count(26, "piece"), "26 pieces");
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_byte_size("262144"), Ok(262_144));
        assert_eq!(parse_byte_size("256KiB"), Ok(262_144));
        assert_eq!(parse_byte_size("256 k"), Ok(262_144));
        assert_eq!(parse_byte_size("25MB"), Ok(25_000_000));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert!(parse_byte_size("").is_err());
        assert!(parse_byte_size("MB").is_err());
        assert!(parse_byte_size("-5").is_err());
        assert!(parse_byte_size("5 parsecs").is_err());
        assert!(parse_byte_size("99999999999999999999").is_err());
        assert!(parse_byte_size("99999999999 TiB").is_err());
        // Told what is wrong, in the words typed.
        let half = parse_byte_size("1.5MB").unwrap_err();
        assert!(half.contains("a size is a whole number"), "{half}");
        let unit = parse_byte_size("5 MB/s").unwrap_err();
        assert!(unit.starts_with("unknown unit \"MB/s\""), "{unit}");
        // A search's size in any case; a setting's bits refused, said as
        // such (a byte's B in any case is not).
        assert_eq!(parse_byte_size("1mb"), Ok(1_000_000));
        let bits = parse_setting_size("8Mb").unwrap_err();
        assert!(bits.contains("write 8MB"), "{bits}");
        assert!(parse_setting_size("25 kb").is_err());
        assert_eq!(parse_setting_size("25kB"), Ok(25_000));
        assert_eq!(parse_setting_size("1mib"), Ok(1 << 20));
        assert_eq!(parse_setting_size("100b"), Ok(100));
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(format_bytes(12), "12 B");
        assert_eq!(format_bytes(262_144), "256 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        // Rounded before the unit is chosen, and whole when it rounds so.
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1025), "1 KiB");
        assert_eq!(format_bytes(1_048_575), "1 MiB");
        assert_eq!(format_bytes((1 << 30) - 1), "1 GiB");
        assert_eq!(format_bytes(1_048_576 - 60_000), "965.4 KiB");
    }
}
