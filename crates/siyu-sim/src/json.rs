//! Hand-written JSON pieces: the simulator renders millions of lines a second, so it appends bytes
//! to a reused buffer instead of building `serde_json::Value` trees.

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n` in decimal, zero-padded to `width` digits (wider numbers are written whole).
pub(crate) fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut rest = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the low `digits` hex digits of `v`.
pub(crate) fn push_hex(out: &mut Vec<u8>, v: u64, digits: u32) {
    for shift in (0..digits).rev() {
        out.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Appends `s` as the inside of a JSON string (without the quotes), escaped.
pub(crate) fn push_escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                push_hex(out, u64::from(b), 2);
            }
            _ => out.push(b),
        }
    }
}

/// Appends an amount of fen as a JSON number of yuan with at most two decimals (`199`, `19.9`, `0.05`).
pub(crate) fn push_yuan(out: &mut Vec<u8>, fen: u64) {
    push_u64(out, fen / 100);
    let cents = fen % 100;
    if cents != 0 {
        out.push(b'.');
        out.push(b'0' + (cents / 10) as u8);
        let last = (cents % 10) as u8;
        if last != 0 {
            out.push(b'0' + last);
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) — H. Hinnant's algorithm.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYYMMDD` of a day number (days since 1970-01-01).
pub(crate) fn push_compact_date(out: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil_from_days(days);
    push_padded(out, y.max(0) as u64, 4);
    push_padded(out, u64::from(m), 2);
    push_padded(out, u64::from(d), 2);
}

/// RFC 3339 UTC timestamp with a `Z` (`2026-11-02T10:15:00Z`; milliseconds only when non-zero).
pub(crate) fn push_timestamp(out: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    push_padded(out, y.max(0) as u64, 4);
    out.push(b'-');
    push_padded(out, u64::from(m), 2);
    out.push(b'-');
    push_padded(out, u64::from(d), 2);
    out.push(b'T');
    push_padded(out, (sod / 3600) as u64, 2);
    out.push(b':');
    push_padded(out, (sod / 60 % 60) as u64, 2);
    out.push(b':');
    push_padded(out, (sod % 60) as u64, 2);
    if millis != 0 {
        out.push(b'.');
        push_padded(out, millis as u64, 3);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_and_money() {
        assert_eq!(text(|o| push_u64(o, 0)), "0");
        assert_eq!(text(|o| push_u64(o, 18_446_744_073_709_551_615)), "18446744073709551615");
        assert_eq!(text(|o| push_padded(o, 7, 3)), "007");
        assert_eq!(text(|o| push_padded(o, 12345, 3)), "12345");
        assert_eq!(text(|o| push_yuan(o, 19900)), "199");
        assert_eq!(text(|o| push_yuan(o, 1990)), "19.9");
        assert_eq!(text(|o| push_yuan(o, 5)), "0.05");
        assert_eq!(text(|o| push_hex(o, 0xbeef, 6)), "00beef");
    }

    #[test]
    fn escapes() {
        assert_eq!(text(|o| push_escaped(o, "a\"b\\c\nd\u{1}é")), "a\\\"b\\\\c\\nd\\u0001é");
    }

    #[test]
    fn timestamps_match_chrono() {
        for ms in [0i64, 1_793_614_500_000, 1_793_614_500_123, 951_782_400_000, 4_102_444_799_000] {
            let expected = siyu_model::Millis(ms).to_rfc3339();
            let expected = expected.strip_suffix(".000Z").map(|s| format!("{s}Z")).unwrap_or(expected);
            assert_eq!(text(|o| push_timestamp(o, ms)), expected);
        }
        assert_eq!(text(|o| push_compact_date(o, 20_394)), "20251102");
    }
}
