//! How the server will read a statement's text in this session.
//!
//! sqlparser lexes every text as its dialect does under default settings and
//! UTF-8. The server does not once a session changes how it reads text:
//! PostgreSQL's `standard_conforming_strings` changes what a backslash in
//! `'…'` means, MySQL's `NO_BACKSLASH_ESCAPES` and `ANSI_QUOTES` do the same
//! for `\` and `"`, and client character sets such as SJIS, Big5 or GBK have
//! multi-byte characters whose second byte is a `\` (or, in MySQL, a
//! backtick). Any of these can hide a second statement inside what the
//! classifier takes for a string literal.
//!
//! So each relay keeps a [`Lexing`]: which of these readings the session is
//! in, from what the server itself reports (PostgreSQL's ParameterStatus,
//! MySQL's own answer at login) and from the settings the session changed.
//! A setting only matters to a text that holds the byte it changes the
//! meaning of, so a text without a backslash reads the same with
//! `standard_conforming_strings` on or off. Where the session is in a
//! reading the classifier does not model and the text holds such a byte,
//! the text is [`StatementKind::Unknown`](super::StatementKind::Unknown),
//! which a read-only level refuses.
//!
//! MariaDB and MySQL also run the body of executable comments (`/*! … */`,
//! `/*M! … */`, with or without a version number) as code:
//! [`open_executable_comments`] blanks the comment marks exactly where the
//! server would, given its flavour and version, so that sqlparser sees the
//! code the server runs.

use std::borrow::Cow;

use super::mysql_lex::{Lexer, Marker, Rules, Tok, Version};

/// The parts of a session's reading of text that the classifier cannot
/// model, as a set of bytes whose meaning they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lexing {
    unmodelled: u8,
}

/// A backslash may not mean what the dialect's default reading says
/// (PostgreSQL `standard_conforming_strings = off`, MySQL `NO_BACKSLASH_ESCAPES`).
const BACKSLASH: u8 = 1;
/// A `"` may quote an identifier rather than a string (MySQL `ANSI_QUOTES`).
const DOUBLE_QUOTE: u8 = 2;
/// Bytes from 0x80 up may form characters that swallow a quote or backslash
/// (client encodings SJIS, Big5, GBK, UHC, GB18030, JOHAB, CP932…).
const HIGH_BYTES: u8 = 4;
/// Nothing can be said about how the text is read (MariaDB `sql_mode =
/// ORACLE`, a setting whose new value was computed on the server, a
/// setting the server reported in a form jitgate does not know).
const EVERYTHING: u8 = 8;

impl Lexing {
    /// Default settings and an ASCII-safe encoding: what sqlparser models.
    pub const DEFAULT: Lexing = Lexing { unmodelled: 0 };

    /// A session whose reading is not known at all. Every part is unknown,
    /// so a later setting that makes one part known again leaves the others
    /// unknown.
    pub const OPAQUE: Lexing = Lexing {
        unmodelled: BACKSLASH | DOUBLE_QUOTE | HIGH_BYTES | EVERYTHING,
    };

    /// A PostgreSQL session in which a statement that may change its
    /// settings is still running: backslashes and non-ASCII bytes may be
    /// read either way.
    pub const POSTGRES_IN_FLUX: Lexing = Lexing {
        unmodelled: BACKSLASH | HIGH_BYTES,
    };

    /// For keeping in an atomic.
    pub fn bits(self) -> u8 {
        self.unmodelled
    }

    pub fn from_bits(bits: u8) -> Lexing {
        Lexing { unmodelled: bits }
    }

    /// Could the server read `text` differently from the dialect's default
    /// reading, given this session's settings?
    pub fn reads_differently(self, text: &[u8]) -> bool {
        match self.unmodelled {
            0 => false,
            u if u & EVERYTHING != 0 => true,
            u => text.iter().any(|&b| {
                (b == b'\\' && u & BACKSLASH != 0)
                    || (b == b'"' && u & DOUBLE_QUOTE != 0)
                    || (b >= 0x80 && u & HIGH_BYTES != 0)
            }),
        }
    }

    /// The union of two readings' unknowns: for a session that is in one of
    /// them, and cannot tell which.
    pub fn either(self, other: Lexing) -> Lexing {
        Lexing {
            unmodelled: self.unmodelled | other.unmodelled,
        }
    }

    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.unmodelled |= bit;
        } else {
            self.unmodelled &= !bit;
        }
    }

    /// Take in a PostgreSQL ParameterStatus (at login and whenever the
    /// server reports a change). Other parameters do not change lexing.
    pub fn postgres_parameter(&mut self, name: &[u8], value: &[u8]) {
        if name == b"standard_conforming_strings" {
            self.set(BACKSLASH, value != b"on");
        } else if name == b"client_encoding" {
            let safe = std::str::from_utf8(value).is_ok_and(postgres_encoding_is_ascii_safe);
            self.set(HIGH_BYTES, !safe);
        }
    }

    /// Take in the session's `@@sql_mode` as the MySQL/MariaDB server
    /// reports it (a comma-separated list of flags).
    pub fn mysql_sql_mode(&mut self, mode: &str) {
        let mut backslash = false;
        let mut double_quote = false;
        let mut unknown = false;
        for flag in mode.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let flag = flag.to_ascii_uppercase();
            match flag.as_str() {
                "NO_BACKSLASH_ESCAPES" => backslash = true,
                // ANSI, DB2, MAXDB, MSSQL and POSTGRESQL all include it; the
                // server lists it separately, but a mode set by name may not.
                "ANSI_QUOTES" | "ANSI" | "DB2" | "MAXDB" | "MSSQL" | "POSTGRESQL" => {
                    double_quote = true
                }
                f if MYSQL_MODES_THAT_KEEP_LEXING.contains(&f) => {}
                // ORACLE switches MariaDB to another grammar; anything else
                // is a flag this version of jitgate has not read about.
                _ => unknown = true,
            }
        }
        self.set(BACKSLASH, backslash);
        self.set(DOUBLE_QUOTE, double_quote);
        self.set(EVERYTHING, unknown);
    }

    /// This reading with the `sql_mode` part of `other`'s (for `SET
    /// sql_mode = DEFAULT`, which returns to the mode the session started
    /// with; the character set part stays).
    pub fn with_sql_mode_of(self, other: Lexing) -> Lexing {
        const MODE: u8 = BACKSLASH | DOUBLE_QUOTE | EVERYTHING;
        Lexing {
            unmodelled: (self.unmodelled & !MODE) | (other.unmodelled & MODE),
        }
    }

    /// This reading with the character set unknown.
    pub fn with_unknown_charset(self) -> Lexing {
        Lexing {
            unmodelled: self.unmodelled | HIGH_BYTES,
        }
    }

    /// Take in the session's `character_set_client` (MySQL/MariaDB name).
    pub fn mysql_client_charset(&mut self, charset: &str) {
        let safe = MYSQL_ASCII_SAFE_CHARSETS
            .iter()
            .any(|safe| charset.eq_ignore_ascii_case(safe));
        self.set(HIGH_BYTES, !safe);
    }
}

/// `sql_mode` flags that change no lexing: what they change is semantics
/// (strictness, dates, `||`, spaces before `(`, precedence), not where a
/// literal, identifier or statement ends.
const MYSQL_MODES_THAT_KEEP_LEXING: &[&str] = &[
    "REAL_AS_FLOAT",
    "PIPES_AS_CONCAT",
    "IGNORE_SPACE",
    "IGNORE_BAD_TABLE_OPTIONS",
    "ONLY_FULL_GROUP_BY",
    "NO_UNSIGNED_SUBTRACTION",
    "NO_DIR_IN_CREATE",
    "NO_KEY_OPTIONS",
    "NO_TABLE_OPTIONS",
    "NO_FIELD_OPTIONS",
    "MYSQL323",
    "MYSQL40",
    "NO_AUTO_VALUE_ON_ZERO",
    "STRICT_TRANS_TABLES",
    "STRICT_ALL_TABLES",
    "NO_ZERO_IN_DATE",
    "NO_ZERO_DATE",
    "ALLOW_INVALID_DATES",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "TRADITIONAL",
    "NO_AUTO_CREATE_USER",
    "HIGH_NOT_PRECEDENCE",
    "NO_ENGINE_SUBSTITUTION",
    "PAD_CHAR_TO_FULL_LENGTH",
    "EMPTY_STRING_IS_NULL",
    "SIMULTANEOUS_ASSIGNMENT",
    "TIME_ROUND_FRACTIONAL",
];

/// MySQL/MariaDB client character sets in which every byte of a multi-byte
/// character is 0x80 or above (or which have none), so quotes, backslashes
/// and backticks are always themselves. Big5, CP932, GBK, SJIS and GB18030
/// are the ones that are not.
const MYSQL_ASCII_SAFE_CHARSETS: &[&str] = &[
    "utf8mb4", "utf8mb3", "utf8", "latin1", "latin2", "latin5", "latin7", "ascii", "binary",
    "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866", "dec8", "hp8", "koi8r",
    "koi8u", "swe7", "greek", "hebrew", "tis620", "armscii8", "keybcs2", "macce", "macroman",
    "geostd8", "ujis", "eucjpms", "euckr", "gb2312",
];

/// PostgreSQL's server encodings, by the names it reports: all ASCII-safe
/// (every byte of a multi-byte character is 0x80 or above). The client-only
/// encodings SJIS, SHIFT_JIS_2004, BIG5, GBK, UHC, GB18030 and JOHAB are not.
fn postgres_encoding_is_ascii_safe(name: &str) -> bool {
    const SAFE: &[&str] = &[
        "UTF8",
        "SQL_ASCII",
        "EUC_JP",
        "EUC_CN",
        "EUC_KR",
        "EUC_TW",
        "EUC_JIS_2004",
        "MULE_INTERNAL",
        "LATIN1",
        "LATIN2",
        "LATIN3",
        "LATIN4",
        "LATIN5",
        "LATIN6",
        "LATIN7",
        "LATIN8",
        "LATIN9",
        "LATIN10",
        "WIN866",
        "WIN874",
        "WIN1250",
        "WIN1251",
        "WIN1252",
        "WIN1253",
        "WIN1254",
        "WIN1255",
        "WIN1256",
        "WIN1257",
        "WIN1258",
        "KOI8R",
        "KOI8U",
        "ISO_8859_5",
        "ISO_8859_6",
        "ISO_8859_7",
        "ISO_8859_8",
    ];
    SAFE.contains(&name)
}

/// The MySQL-family server a session talks to, from its greeting: which
/// executable comments it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MysqlServer {
    pub mariadb: bool,
    /// `major * 10000 + minor * 100 + patch`; 0 if the greeting did not say.
    pub version_id: u32,
}

impl MysqlServer {
    /// The servers the unit tests read text as.
    #[cfg(test)]
    pub(crate) const MARIADB_10_11: MysqlServer = MysqlServer {
        mariadb: true,
        version_id: 101119,
    };
    #[cfg(test)]
    pub(crate) const MYSQL_8_0: MysqlServer = MysqlServer {
        mariadb: false,
        version_id: 80036,
    };

    /// From the greeting's version string: `8.0.36`, `5.5.5-10.11.19-MariaDB-…`.
    pub fn from_version(text: &str) -> MysqlServer {
        let mariadb = text.contains("MariaDB");
        // MariaDB puts a fake 5.5.5- in front for old replication peers.
        let text = if mariadb {
            text.strip_prefix("5.5.5-").unwrap_or(text)
        } else {
            text
        };
        let numbers: Vec<u32> = text
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()
            .unwrap_or("")
            .split('.')
            .map_while(|part| part.parse().ok())
            .collect();
        let version_id = match numbers[..] {
            [major, minor, patch, ..] if minor < 100 && patch < 100 => {
                major * 10000 + minor * 100 + patch
            }
            _ => 0,
        };
        MysqlServer {
            mariadb,
            version_id,
        }
    }

    /// Does this server run an executable comment's body? `None` where that
    /// cannot be known.
    fn runs(self, marker: Marker, version: Option<Version>) -> Option<bool> {
        match marker {
            Marker::LowerM => return None,
            Marker::MariaDb if !self.mariadb => return Some(false),
            _ => {}
        }
        let Some(version) = version else {
            return Some(true);
        };
        // MySQL reads five digits and leaves a sixth as code.
        if version.digits == 6 && !self.mariadb {
            return None;
        }
        // MariaDB does not claim MySQL 5.7 and later: it skips `/*!50700`
        // up to `/*!99999` (but runs `/*M!` with the same numbers).
        if self.mariadb
            && marker == Marker::Bang
            && version.digits == 5
            && (50700..=99999).contains(&version.value)
        {
            return Some(false);
        }
        if self.version_id == 0 {
            return None;
        }
        Some(version.value <= self.version_id)
    }
}

/// Does the text hold anything that looks like an executable comment? A
/// quick test, so that texts without one are never lexed twice.
pub(crate) fn has_executable_comment(text: &[u8]) -> bool {
    text.windows(3)
        .any(|w| w[0] == b'/' && w[1] == b'*' && matches!(w[2], b'!' | b'M' | b'm'))
}

/// Does `--` stand before a non-ASCII white space character? sqlparser's
/// MySQL tokenizer starts a comment there; the server starts one only before
/// an ASCII space or control byte, and reads U+00A0 and its kind as part of
/// an identifier.
fn dash_dash_before_unicode_space(text: &str) -> bool {
    // Unicode white space is never ASCII: most texts are done here.
    if text.is_ascii() {
        return false;
    }
    text.match_indices("--").any(|(at, _)| {
        text[at + 2..]
            .chars()
            .next()
            .is_some_and(|c| !c.is_ascii() && c.is_whitespace())
    })
}

/// The text with every executable comment opened as `server` opens it: the
/// marks of one it runs become spaces (its body stays, as code), one it does
/// not run becomes spaces whole. `None` where the reading is not certain
/// (nested comments, an unterminated executable comment, a marker or
/// version whose handling this server's flavour leaves open, a `--` that
/// sqlparser would take for a comment and the server would not), which the
/// caller classifies as unknown.
pub(crate) fn open_executable_comments(text: &str, server: MysqlServer) -> Option<Cow<'_, str>> {
    let bytes = text.as_bytes();
    if dash_dash_before_unicode_space(text) {
        return None;
    }
    if !has_executable_comment(bytes) {
        return Some(Cow::Borrowed(text));
    }
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, range: std::ops::Range<usize>| {
        for b in &mut out[range] {
            // Keep line breaks, so positions in parser errors stay true.
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    let mut lexer = Lexer::new(bytes, Rules::default());
    // Inside a comment whose body runs: where it opened, and how many
    // ordinary comments had been skipped then.
    let mut open: Option<usize> = None;
    while let Some(token) = lexer.next() {
        let span = lexer.token_span();
        match token {
            Tok::Executable { marker, version } => {
                if open.is_some() {
                    return None;
                }
                if server.runs(marker, version)? {
                    blank(&mut out, span);
                    open = Some(lexer.comments_skipped());
                } else {
                    lexer.skip_to_comment_end()?;
                    blank(&mut out, span.start..lexer.position());
                }
            }
            Tok::Punct(b'*') if open.is_some() && bytes.get(span.end) == Some(&b'/') => {
                if open != Some(lexer.comments_skipped()) {
                    // An ordinary comment inside a running one.
                    return None;
                }
                blank(&mut out, span.start..span.end + 1);
                lexer.skip_byte();
                open = None;
            }
            _ => {}
        }
    }
    if open.is_some() {
        return None;
    }
    // Only ASCII bytes were replaced by ASCII spaces, so this stays UTF-8.
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARIADB: MysqlServer = MysqlServer::MARIADB_10_11;
    const MYSQL8: MysqlServer = MysqlServer::MYSQL_8_0;

    #[test]
    fn server_versions_come_from_the_greeting() {
        assert_eq!(
            MysqlServer::from_version("5.5.5-10.11.19-MariaDB-0+deb12u1"),
            MARIADB
        );
        assert_eq!(MysqlServer::from_version("8.0.36"), MYSQL8);
        assert_eq!(MysqlServer::from_version("garbage").version_id, 0);
    }

    #[test]
    fn a_setting_matters_only_to_texts_with_its_byte() {
        let mut lexing = Lexing::DEFAULT;
        lexing.postgres_parameter(b"standard_conforming_strings", b"off");
        assert!(lexing.reads_differently(br"SELECT 'a\'"));
        assert!(!lexing.reads_differently(b"SELECT 'a'"));
        lexing.postgres_parameter(b"standard_conforming_strings", b"on");
        lexing.postgres_parameter(b"client_encoding", b"SJIS");
        assert!(lexing.reads_differently("SELECT 'ソ'".as_bytes()));
        assert!(!lexing.reads_differently(br"SELECT 'a\'"));
        lexing.postgres_parameter(b"client_encoding", b"UTF8");
        assert_eq!(lexing, Lexing::DEFAULT);
    }

    #[test]
    fn mysql_modes_and_charsets() {
        let mut lexing = Lexing::DEFAULT;
        lexing.mysql_sql_mode("STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION");
        assert_eq!(lexing, Lexing::DEFAULT);
        lexing.mysql_sql_mode("NO_BACKSLASH_ESCAPES");
        assert!(lexing.reads_differently(br"SELECT '\'"));
        assert!(!lexing.reads_differently(b"SELECT \"x\""));
        lexing.mysql_sql_mode("ansi");
        assert!(lexing.reads_differently(b"SELECT \"x\""));
        lexing.mysql_sql_mode("ORACLE");
        assert!(lexing.reads_differently(b"SELECT 1"));
        lexing.mysql_sql_mode("");
        lexing.mysql_client_charset("gbk");
        assert!(lexing.reads_differently(&[b'\'', 0xbf, b'\\', b'\'']));
        lexing.mysql_client_charset("utf8mb4");
        assert_eq!(lexing, Lexing::DEFAULT);
        let mut opaque = Lexing::OPAQUE;
        opaque.mysql_sql_mode("");
        assert!(
            opaque.reads_differently(&[0xbf]),
            "the charset stays unknown"
        );
    }

    fn opened(text: &str, server: MysqlServer) -> Option<String> {
        open_executable_comments(text, server).map(|c| c.into_owned())
    }

    #[test]
    fn executable_comments_open_where_the_server_opens_them() {
        assert_eq!(
            opened("SELECT 1 /*M! ; DELETE FROM t */", MARIADB).as_deref(),
            Some("SELECT 1      ; DELETE FROM t   ")
        );
        // MySQL reads /*M! as a plain comment.
        assert_eq!(
            opened("SELECT 1 /*M! ; DELETE FROM t */", MYSQL8).as_deref(),
            Some("SELECT 1                        ")
        );
        assert_eq!(
            opened("SELECT 1 /*!50000 ; DELETE FROM t */", MARIADB).as_deref(),
            Some("SELECT 1          ; DELETE FROM t   ")
        );
        assert_eq!(
            opened("SELECT 1 /*M!100000 ; DELETE FROM t */", MARIADB).as_deref(),
            Some("SELECT 1            ; DELETE FROM t   ")
        );
        // A version above the server's: not run, and skipped to the first
        // `*/` whatever quotes the body holds.
        assert_eq!(
            opened("SELECT 1 /*!99999 '*/ ; DELETE FROM t", MYSQL8).as_deref(),
            Some("SELECT 1              ; DELETE FROM t")
        );
        assert_eq!(
            opened("SELECT 1 /*!999999 '*/ ; DELETE FROM t", MARIADB).as_deref(),
            Some("SELECT 1               ; DELETE FROM t")
        );
        // MariaDB skips MySQL 5.7-and-later numbers (checked on 10.11:
        // `/*!50699 , 2 */` runs, `/*!50700 , 2 */` and `/*!99999 , 2 */`
        // do not), unless written `/*M!`; below 50700 it runs.
        assert_eq!(
            opened("SELECT 1 /*!99999 '*/ ; DELETE FROM t", MARIADB).as_deref(),
            Some("SELECT 1              ; DELETE FROM t")
        );
        assert_eq!(
            opened("SELECT 1 /*!50700 '*/ ; DELETE FROM t", MARIADB).as_deref(),
            Some("SELECT 1              ; DELETE FROM t")
        );
        assert_eq!(
            opened("SELECT 1 /*!50699 '*/ ; DELETE FROM t", MARIADB),
            None
        );
        assert_eq!(
            opened("SELECT 1 /*M!99999 '*/ ; DELETE FROM t", MARIADB),
            None
        );
        // A body that runs is code: `*/` inside its string does not close it.
        assert_eq!(
            opened("SELECT /*!'*/' */ 1", MARIADB).as_deref(),
            Some("SELECT    '*/'    1")
        );
        assert_eq!(opened("SELECT 1 /*m! 2 */", MARIADB), None);
        assert_eq!(opened("SELECT 1 /*!123456 2 */", MYSQL8), None);
        assert_eq!(opened("SELECT 1 /*! 2", MARIADB), None);
        assert_eq!(opened("SELECT 1 /*! /* 2 */ */", MARIADB), None);
        assert_eq!(
            opened("SELECT '/*!' /* x */", MARIADB).as_deref(),
            Some("SELECT '/*!' /* x */")
        );
    }
}
