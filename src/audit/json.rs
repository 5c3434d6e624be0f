//! Writing an [`AuditEvent`] as JSON members, by hand.
//!
//! Every forwarded statement pays for its audit line before it reaches the
//! upstream, and under load serde_json's byte-at-a-time string escaping was
//! the largest single cost of a record (about a quarter of
//! `cargo bench --bench audit`). This writer produces the same bytes as
//! `serde_json::to_writer(event)` without the braces (a test holds it to
//! that), but scans strings eight bytes at a time for the few that need
//! escaping: control characters, `"` and `\`.

use super::AuditEvent;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

impl AuditEvent<'_> {
    /// Append `"event":"…"` and every field that is set, comma-separated,
    /// in declaration order (the order serde uses).
    pub(super) fn write_members(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"event\":");
        push_str(out, self.event);
        match self.encoded {
            // Only if the five fields are still the very strings it encoded
            // (struct update syntax can replace one after `event()`).
            Some(members) if members.encodes(self) => out.extend_from_slice(&members.json),
            _ => self.write_session_members(out),
        }
        push_str_members(out, &[("client_addr", self.client_addr)]);
        if let Some(seq) = self.seq {
            push_key(out, "seq");
            push_u64(out, seq);
        }
        push_str_members(
            out,
            &[
                ("statement", self.statement),
                ("statement_base64", self.statement_base64),
                ("kind", self.kind),
                ("outcome", self.outcome),
            ],
        );
        if let Some(rows) = self.rows {
            push_key(out, "rows");
            push_u64(out, rows);
        }
        if let Some(ms) = self.duration_ms {
            push_key(out, "duration_ms");
            // serde_json's own float format (and `null` for NaN or infinity);
            // writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &ms);
        }
        push_str_members(out, &[("reason", self.reason), ("by", self.by)]);
        if let Some(t) = self.expires_at {
            push_key(out, "expires_at");
            out.push(b'"');
            // RFC 3339 needs no escaping.
            push_rfc3339_millis(out, t);
            out.push(b'"');
        }
        push_str_members(
            out,
            &[
                ("detail", self.detail),
                ("request", self.request),
                ("policy", self.policy),
                ("comment", self.comment),
                ("credential", self.credential),
            ],
        );
    }

    /// Append `session`, `identity`, `grant`, `target` and `level` (those set).
    pub(super) fn write_session_members(&self, out: &mut Vec<u8>) {
        push_str_members(
            out,
            &[
                ("session", self.session),
                ("identity", self.identity),
                ("grant", self.grant),
                ("target", self.target),
                ("level", self.level),
            ],
        );
    }
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn push_str_members(out: &mut Vec<u8>, members: &[(&str, Option<&str>)]) {
    for (key, value) in members {
        if let Some(value) = value {
            push_key(out, key);
            push_str(out, value);
        }
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The last instant RFC 3339 (and humantime) can write: 9999-12-31T23:59:59.999Z.
const LAST_INSTANT: std::time::Duration = std::time::Duration::from_millis(253_402_300_799_999);

/// Append `t` as `humantime::format_rfc3339_millis` does
/// (`2026-11-29T10:39:53.123Z`). Every record carries its time, so the
/// part up to the second is formatted once per second per thread and
/// reused; only the milliseconds are written each time.
pub(super) fn push_rfc3339_millis(out: &mut Vec<u8>, t: std::time::SystemTime) {
    use std::cell::Cell;
    /// `YYYY-MM-DDTHH:MM:SS` of the second last formatted on this thread.
    const PREFIX: usize = 19;
    thread_local! {
        static SECOND: Cell<Option<(u64, [u8; PREFIX])>> = const { Cell::new(None) };
    }
    // humantime panics before 1970 and fails after 9999: a clock that far
    // off is clamped rather than allowed to break the record.
    let since_epoch = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST_INSTANT);
    let secs = since_epoch.as_secs();
    let prefix = match SECOND.get() {
        Some((s, prefix)) if s == secs => prefix,
        _ => {
            let whole =
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + since_epoch).to_string();
            let mut prefix = [b'0'; PREFIX];
            if let Some(p) = whole.as_bytes().get(..PREFIX) {
                prefix.copy_from_slice(p);
            }
            SECOND.set(Some((secs, prefix)));
            prefix
        }
    };
    let ms = since_epoch.subsec_millis();
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// Append `s` as a JSON string, quotes included, escaped as serde_json does:
/// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00xx` for the other
/// control characters; everything else (DEL and all of Unicode) as is.
pub(super) fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `bytes[copied..i]` needs no escaping and is not yet in `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(word);
            let special = special_bytes(u64::from_le_bytes(eight));
            if special == 0 {
                i += 8;
                continue;
            }
            // The lowest flagged byte is always a real one (see `special_bytes`).
            i += (special.trailing_zeros() / 8) as usize;
        } else if !needs_escape(bytes[i]) {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[copied..i]);
        push_escape(out, bytes[i]);
        i += 1;
        copied = i;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The high bit of each byte of `word` that is below 0x20, `"` or `\`.
///
/// The usual "has a zero byte" trick: exact as to whether any byte matches,
/// and the lowest flagged byte always matches; a borrow can flag a byte
/// above a real match, so only the lowest flag is used.
fn special_bytes(word: u64) -> u64 {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (below_space
        | (quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash))
        & HIGHS
}

fn push_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::audit::SessionMembers;

    /// What serde_json writes for the event, without its braces.
    fn by_serde(event: &AuditEvent<'_>) -> String {
        let text = serde_json::to_string(event).unwrap();
        text[1..text.len() - 1].to_owned()
    }

    fn by_hand(event: &AuditEvent<'_>) -> String {
        let mut out = Vec::new();
        event.write_members(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pre_encoded_session_members_write_what_the_fields_would() {
        let members = SessionMembers::new("s-1", "al\"ice\n", "g-1", "t\\x", "read");
        let encoded = AuditEvent {
            seq: Some(3),
            statement: Some("SELECT 1"),
            ..members.event("statement")
        };
        assert!(encoded.encoded.is_some());
        let plain = AuditEvent {
            seq: Some(3),
            statement: Some("SELECT 1"),
            encoded: None,
            ..members.event("statement")
        };
        assert_eq!(by_hand(&encoded), by_hand(&plain));
        assert_eq!(by_hand(&encoded), by_serde(&encoded));
        // A field replaced after `event()` is written, not the cached bytes.
        let other = AuditEvent {
            grant: Some("g-2"),
            ..members.event("statement")
        };
        assert!(by_hand(&other).contains(r#""grant":"g-2""#));
        assert_eq!(by_hand(&other), by_serde(&other));
        assert!(by_hand(&encoded).contains(
            r#","identity":"al\"ice\n","grant":"g-1","target":"t\\x","level":"read","seq":3"#
        ));
    }

    #[test]
    fn times_are_written_as_humantime_writes_them() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut times = vec![
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::from_millis(999),
            SystemTime::UNIX_EPOCH + super::LAST_INSTANT,
            SystemTime::now(),
        ];
        // Neighbouring instants (the cache is per second) and random ones up to year 9999.
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for ms in (0..5_000).step_by(7) {
            times.push(base + Duration::from_millis(ms));
        }
        for _ in 0..2_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            times.push(SystemTime::UNIX_EPOCH + Duration::from_millis(rng % 253_402_300_799_000));
        }
        // A clock before 1970 or after 9999 (where humantime panics or fails) is clamped.
        for (t, clamped) in [
            (
                SystemTime::UNIX_EPOCH - Duration::from_millis(1500),
                "1970-01-01T00:00:00.000Z",
            ),
            (
                SystemTime::UNIX_EPOCH + super::LAST_INSTANT + Duration::from_secs(86_400),
                "9999-12-31T23:59:59.999Z",
            ),
        ] {
            let mut out = Vec::new();
            super::push_rfc3339_millis(&mut out, t);
            assert_eq!(String::from_utf8(out).unwrap(), clamped);
        }
        for t in times {
            let mut out = Vec::new();
            super::push_rfc3339_millis(&mut out, t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_millis(t).to_string(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            super::push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn every_byte_value_is_escaped_as_serde_json_does() {
        // Each character alone, and at each offset of an eight-byte word
        // with plain text around it.
        for c in (0u32..0x80).chain([0xe9, 0x2028, 0x1f600]) {
            let c = char::from_u32(c).unwrap();
            for offset in 0..9 {
                let s = format!("{}{c}{}", "x".repeat(offset), "y".repeat(9));
                let mut out = Vec::new();
                push_str(&mut out, &s);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&s).unwrap(),
                    "{c:?} at {offset}"
                );
            }
        }
    }

    #[test]
    fn strings_full_of_specials_match_serde_json() {
        let samples = [
            "",
            "\"",
            "\\\\\"\"\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "SELECT \"a\\b\" FROM t WHERE x = 'it''s'\n  AND y = E'\\t'",
            "\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}",
            "日本語のテキスト \"引用\" と\\バックスラッシュ",
            "0123456789abcdef0123456789abcdef\"",
            " !#$%&'()*+,-./:;<=>?@[]^_`{|}~ ",
        ];
        for s in samples {
            let mut out = Vec::new();
            push_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn random_strings_match_serde_json() {
        const PIECES: [&str; 12] = [
            "a", "SELECT ", "\"", "\\", "\n", "\u{0}", "\u{1f}", " ", "é", "€", "😀", "\u{7f}",
        ];
        // xorshift64: the same strings on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut s = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for _ in 0..state % 40 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push_str(PIECES[(state % PIECES.len() as u64) as usize]);
            }
            let mut out = Vec::new();
            push_str(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn events_match_serde_json_with_any_fields_set() {
        let statement = "SELECT \"x\"\n\tFROM t -- \u{1}";
        // Every field, without `..`: a new field of AuditEvent stops this
        // from compiling until it is set here, and then fails the comparison
        // until `write_members` writes it too.
        let full = AuditEvent {
            event: "statement_end",
            session: Some("s_1"),
            identity: Some("alice \"the\" admin"),
            grant: Some("g_2"),
            target: Some("prod-pg"),
            level: Some("read"),
            client_addr: Some("10.0.0.1:5000"),
            seq: Some(u64::MAX),
            statement: Some(statement),
            statement_base64: Some("U0VMRUNUIOk="),
            kind: Some("read"),
            outcome: Some("SELECT 1"),
            rows: Some(0),
            duration_ms: Some(0.125),
            reason: Some("incident\\42"),
            by: Some("bob"),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_000_000_123)),
            detail: Some("d"),
            request: Some("r_3"),
            policy: Some("p"),
            comment: Some("ok\r\n"),
            credential: Some("c0ffee"),
            // Not a member of its own; its test is the one below.
            encoded: None,
        };
        assert_eq!(by_hand(&full), by_serde(&full));
        assert_eq!(
            by_hand(&AuditEvent::new("login_ok")),
            by_serde(&AuditEvent::new("login_ok"))
        );
        for ms in [f64::NAN, f64::INFINITY, 1e300, 3.0, 0.1 + 0.2] {
            let e = AuditEvent {
                duration_ms: Some(ms),
                statement: Some(statement),
                ..AuditEvent::new("statement_end")
            };
            assert_eq!(by_hand(&e), by_serde(&e), "{ms}");
        }
    }
}
