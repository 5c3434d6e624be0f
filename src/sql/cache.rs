//! The classification cache: texts that differ only in their numbers share
//! an entry, so a driver's repeated statements are parsed once.

use std::sync::LazyLock;

use dashmap::DashMap;

use super::functions::Catalog;
use super::{Dialect, StatementKind, classify_in, first_word};

/// [`classify`](super::classify), remembering the answer for short, frequently repeated texts
/// (drivers and ORMs send the same few hundred statements over and over).
///
/// The cache is bounded: texts of [`CACHE_MAX_SQL_BYTES`] or more are never
/// stored, and a cache that reaches [`CACHE_MAX_ENTRIES`] is emptied before
/// the next insert. Clearing instead of evicting keeps the hot path free of
/// bookkeeping; a working set larger than the cache just degrades to parsing.
pub fn classify_cached(dialect: Dialect, sql: &str) -> StatementKind {
    classify_cached_in(Catalog::of_dialect(dialect), sql)
}

/// [`classify_cached`], with the functions of `catalog` built in: one cache
/// per catalog, since a name's call may be a read on one server and reach a
/// stored function on another.
pub(super) fn classify_cached_in(catalog: Catalog, sql: &str) -> StatementKind {
    static POSTGRES: LazyLock<KindCache> = LazyLock::new(|| KindCache::new(CACHE_MAX_ENTRIES));
    static MARIADB: LazyLock<KindCache> = LazyLock::new(|| KindCache::new(CACHE_MAX_ENTRIES));
    static MYSQL: LazyLock<KindCache> = LazyLock::new(|| KindCache::new(CACHE_MAX_ENTRIES));
    static MYSQL_FAMILY: LazyLock<KindCache> = LazyLock::new(|| KindCache::new(CACHE_MAX_ENTRIES));
    let cache = match catalog {
        Catalog::Postgres => &*POSTGRES,
        Catalog::MariaDb => &*MARIADB,
        Catalog::Mysql => &*MYSQL,
        Catalog::MysqlFamily => &*MYSQL_FAMILY,
    };
    cache.get_or_classify(catalog, sql)
}

/// May `sql` share a cache entry with the same text holding other numbers?
/// Only one query or data change (`SELECT`, `WITH`, `INSERT`…) without a
/// backslash or a `set_config`: in `SET default_transaction_read_only = 0`
/// and `set_config(…, '0', …)` the number is the setting, and in `E'\052'`
/// a backslash makes digits a character.
fn numbers_do_not_matter(sql: &str) -> bool {
    const SHAPED: &[&str] = &["select", "with", "insert", "update", "delete", "values"];
    let (first, _) = first_word(sql);
    if !SHAPED.iter().any(|word| first.eq_ignore_ascii_case(word)) {
        return false;
    }
    // One pass over the bytes: no backslash, no `;` but trailing ones (one
    // statement only: `SELECT 1; SET default_transaction_read_only = 0`),
    // no `set_config` (the value of a setting: `set_config(name, '0', …)`).
    let bytes = sql.trim_end().trim_end_matches(';').as_bytes();
    !bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\\' | b';' => true,
        b'_' => {
            i >= 3
                && bytes[i - 3..]
                    .get(..10)
                    .is_some_and(|word| word.eq_ignore_ascii_case(b"set_config"))
        }
        _ => false,
    })
}

/// `sql` with every standalone run of digits replaced by `1`: the cache key,
/// and the text that is classified, for the texts [`numbers_do_not_matter`]
/// lets through. Digits inside names (`t2`, `$1`) or stuck to letters
/// (`0x1F`, `1e5`) stay.
///
/// Writes into `out` (cleared first) only when something changes, so the
/// cache lookup of a statement allocates nothing once `out` has grown.
fn number_shape<'a>(sql: &'a str, out: &'a mut String) -> &'a str {
    let bytes = sql.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut changed = false;
    let mut copied = 0;
    let mut i = 0;
    loop {
        i = next_digit(bytes, i);
        if i == bytes.len() {
            break;
        }
        let standalone = i == 0 || !is_word(bytes[i - 1]);
        if !standalone {
            i += 1;
            continue;
        }
        let end = bytes[i..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |n| i + n);
        let stuck = end < bytes.len() && (bytes[end].is_ascii_alphabetic() || bytes[end] == b'_');
        if !stuck && &bytes[i..end] != b"1" {
            if !changed {
                out.clear();
                changed = true;
            }
            // `i` and `end` are at ASCII digits or the end: char boundaries.
            out.push_str(&sql[copied..i]);
            out.push('1');
            copied = end;
        }
        i = end;
    }
    if !changed {
        return sql;
    }
    out.push_str(&sql[copied..]);
    out
}

/// The index of the first ASCII digit at or after `from`, or `bytes.len()`.
/// Eight bytes at a time: most of a statement is not digits.
fn next_digit(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = ONES * 0x80;
    let mut i = from;
    while let Some(word) = bytes.get(i..i + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let x = u64::from_le_bytes(eight);
        // Per byte, without carries between bytes: the low seven bits plus
        // 0x50 reach 0x80 from '0' up, plus 0x46 from ':' up; bytes with the
        // high bit set are not ASCII and never digits.
        let low = x & !HIGHS;
        let from_zero = low + ONES * (0x80 - u64::from(b'0'));
        let past_nine = low + ONES * (0x80 - u64::from(b'9') - 1);
        let digits = from_zero & !past_nine & !x & HIGHS;
        if digits != 0 {
            return i + (digits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !bytes[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Entries kept per dialect by [`classify_cached`] before it starts over.
pub const CACHE_MAX_ENTRIES: usize = 4096;

/// Texts this long or longer bypass the cache: long texts are rarely repeated
/// verbatim, and keeping them would let one client pin megabytes of memory.
pub const CACHE_MAX_SQL_BYTES: usize = 4096;

thread_local! {
    /// [`number_shape`]'s output, reused (it stays below `CACHE_MAX_SQL_BYTES`).
    static SHAPE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// One dialect's statement-text → kind cache (the text alone is the key, so a
/// cache must never be shared between dialects).
struct KindCache {
    /// Texts whose numbers do not matter, by their shape.
    kinds: DashMap<Box<str>, StatementKind>,
    /// The other texts, by themselves (never looked up by a shape).
    exact: DashMap<Box<str>, StatementKind>,
    max_entries: usize,
}

impl KindCache {
    fn new(max_entries: usize) -> KindCache {
        KindCache {
            kinds: DashMap::new(),
            exact: DashMap::new(),
            max_entries,
        }
    }

    fn get_or_classify(&self, catalog: Catalog, sql: &str) -> StatementKind {
        if sql.len() >= CACHE_MAX_SQL_BYTES {
            return classify_in(catalog, sql);
        }
        // Statements that differ only in their numbers share an entry, so a
        // client sending `... WHERE id = 1`, `... id = 2`... parses once.
        // Only texts whose numbers do not matter are stored under their
        // shape; the others under themselves, in a map of their own.
        // Whether numbers matter depends on no digit, so it is the same for
        // every text of one shape: an entry found under the shape came from
        // a text like this one, and the test runs only on a miss.
        SHAPE.with_borrow_mut(|buffer| {
            let original = sql;
            let shaped = number_shape(original, buffer);
            if let Some(kind) = self.kinds.get(shaped) {
                return *kind;
            }
            let (map, key) = if numbers_do_not_matter(original) {
                (&self.kinds, shaped)
            } else {
                if let Some(kind) = self.exact.get(original) {
                    return *kind;
                }
                (&self.exact, original)
            };
            let kind = classify_in(catalog, key);
            // Two sessions may both see a full cache and both clear it; that
            // only costs a few extra parses.
            if map.len() >= self.max_entries {
                map.clear();
            }
            map.insert(key.into(), kind);
            kind
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::StatementKind::{Read, Session, Write};

    #[test]
    fn next_digit_finds_what_a_byte_loop_finds() {
        // Every byte value in every position of a word, and random texts.
        let slow = |b: &[u8], from: usize| {
            (from..b.len())
                .find(|&i| b[i].is_ascii_digit())
                .unwrap_or(b.len())
        };
        for value in 0..=255u8 {
            for at in 0..20 {
                let mut text = vec![b'x'; 20];
                text[at] = value;
                for from in [0, 1, at, 19] {
                    assert_eq!(
                        next_digit(&text, from),
                        slow(&text, from),
                        "{value} at {at}"
                    );
                }
            }
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..200 {
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Mostly letters, some digits, some bytes >= 0x80.
                    [b'a', b'7', 0xB9, b'/', b':', b'0', 0xB0, b' '][(rng % 8) as usize]
                })
                .collect();
            for from in 0..=len {
                assert_eq!(
                    next_digit(&text, from),
                    slow(&text, from),
                    "{text:?} from {from}"
                );
            }
        }
    }

    #[test]
    fn numbers_share_a_cache_shape_but_names_do_not() {
        assert_eq!(
            number_shape(
                "SELECT abalance FROM a WHERE aid = 73412;",
                &mut String::new()
            ),
            "SELECT abalance FROM a WHERE aid = 1;"
        );
        assert_eq!(
            number_shape("SELECT $1, t2.c FROM t2", &mut String::new()),
            "SELECT $1, t2.c FROM t2"
        );
        assert_eq!(
            number_shape("SELECT 0x1F, 1e5, 2.50", &mut String::new()),
            "SELECT 0x1F, 1e5, 1.1"
        );
        assert_eq!(
            number_shape("SELECT 'ü', 42", &mut String::new()),
            "SELECT 'ü', 1"
        );
        // Where the number matters, the text is its own key.
        let analyze0 = "EXPLAIN (ANALYZE 0) DELETE FROM t";
        assert_eq!(classify_cached(Dialect::Postgres, analyze0), Read);
        let analyze1 = "EXPLAIN (ANALYZE 1) DELETE FROM t";
        assert_eq!(classify_cached(Dialect::Postgres, analyze1), Write);
        for (sql, kind) in [
            ("SET default_transaction_read_only = 1", Session),
            ("SET default_transaction_read_only = 0", Write),
            ("SET default_transaction_read_only TO '0'", Write),
        ] {
            assert_eq!(classify_cached(Dialect::Postgres, sql), kind, "{sql}");
        }
        assert_eq!(
            classify_cached(
                Dialect::Postgres,
                "SELECT * FROM t WHERE id = 99 FOR UPDATE"
            ),
            Write
        );
        assert_eq!(
            classify_cached(Dialect::Postgres, "SELECT * FROM t WHERE id = 98"),
            Read
        );
    }

    #[test]
    fn cache_stays_bounded_and_skips_long_texts() {
        let cache = KindCache::new(8);
        for i in 0..100 {
            let sql = format!("SELECT {i}");
            assert_eq!(cache.get_or_classify(Catalog::Postgres, &sql), Read);
            assert!(cache.kinds.len() <= 8);
        }
        let long = format!("SELECT 1 {}", " ".repeat(CACHE_MAX_SQL_BYTES));
        cache.kinds.clear();
        assert_eq!(cache.get_or_classify(Catalog::Postgres, &long), Read);
        assert!(cache.kinds.is_empty());
    }
}
