//! Human-readable byte counts: parsing `--block-size 1M`, printing "12.3 MiB".

/// Parses "4096", "64K", "1M", "4MiB", "2G" (powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size '{text}': use a number with an optional K, M or G suffix (powers of 1024)");
    let trimmed = text.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B').to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(invalid()),
    };
    number.checked_mul(1 << shift).ok_or_else(invalid)
}

/// "12.3 MiB" style, exact bytes below 1 KiB.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for larger in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = larger;
    }
    format!("{value:.1} {unit}")
}

/// `part` as a percentage of `whole`, 0 for an empty whole.
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_bad_ones_explain_the_format() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        let error = parse_size("4X").unwrap_err();
        assert!(error.contains("'4X'") && error.contains("K, M or G"), "{error}");
        assert!(parse_size("").is_err() && parse_size("M").is_err() && parse_size("99999999999999G").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(4 << 30), "4.0 GiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
    }
}
