//! Just enough of MySQL's and MariaDB's lexer to tell code from string
//! literals, quoted identifiers and comments, under each way the server may be
//! reading the text (backslash escapes on or off, `"` as a string or an
//! identifier, single- or multi-byte client character sets).
//!
//! Two users: the `KILL` guard (`wire/mysql/kill.rs`), which must find the
//! keyword under every lexing at once, and the classifier, which must open
//! executable comments (`/*! … */`, `/*M! … */`, versioned or not) exactly
//! where the server does before handing the text to sqlparser.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    /// A run of identifier characters (ASCII letters, digits, `_`, `$`; and
    /// multi-byte characters under multi-byte rules).
    Word(&'a [u8]),
    Semi,
    /// A string literal or quoted identifier.
    Quoted,
    /// The start of an executable comment (`/*!`, `/*M!`, `/*m!`), with its
    /// version number when one follows (five or six digits): its content is
    /// code on a server that runs it.
    Executable {
        marker: Marker,
        version: Option<Version>,
    },
    Punct(u8),
}

/// The version number of an executable comment, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) value: u32,
    /// Five or six: MySQL reads five digits, MariaDB six where a sixth follows.
    pub(crate) digits: u8,
}

/// Which executable-comment opener was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// `/*!`: MySQL and MariaDB both run it.
    Bang,
    /// `/*M!`: MariaDB runs it; to MySQL it is an ordinary comment.
    MariaDb,
    /// `/*m!`: not a form either server documents; readings may differ.
    LowerM,
}

/// How the server might be lexing the text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Backslash escapes inside `'…'` (off with NO_BACKSLASH_ESCAPES).
    pub(crate) escape_single: bool,
    /// Backslash escapes inside `"…"` (off with NO_BACKSLASH_ESCAPES, and
    /// for identifiers under ANSI_QUOTES).
    pub(crate) escape_double: bool,
    /// A byte 0x81..=0xFE starts a two-byte character whose second byte is
    /// not a delimiter (GBK, Big5, SJIS…). Without it, a non-ASCII byte
    /// separates words, so `KILL` right next to one is still found.
    pub(crate) multibyte: bool,
    /// Executable comments are skipped as ordinary ones (a version this
    /// server does not run) rather than returned as code.
    pub(crate) skip_executable: bool,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            escape_single: true,
            escape_double: true,
            multibyte: false,
            skip_executable: false,
        }
    }
}

impl Rules {
    /// Every reading the server could be using: with and without backslash
    /// escapes, `"` as a string or an identifier, single- or multi-byte
    /// client character sets, executable comments run or skipped.
    pub(crate) fn every() -> impl Iterator<Item = Rules> {
        [false, true].into_iter().flat_map(|skip_executable| {
            [false, true].into_iter().flat_map(move |multibyte| {
                [(true, true), (true, false), (false, true), (false, false)]
                    .into_iter()
                    .map(move |(escape_single, escape_double)| Rules {
                        escape_single,
                        escape_double,
                        multibyte,
                        skip_executable,
                    })
            })
        })
    }
}

/// Which of the words the MySQL relay's guards look for appear anywhere in
/// a text, in any case, found in one pass: the guards themselves (which
/// lex) run only for texts that mention their word, and most texts mention
/// none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mentions(u8);

const MENTIONED: [&[u8]; 7] = [
    b"kill",
    b"use",
    b"execute",
    b"sql_mode",
    b"names",
    b"character",
    b"charset",
];

/// For each byte, the words of [`MENTIONED`] that start with it (in either
/// case), as bits: most bytes start none, so the scan stays one load and one
/// branch a byte.
const FIRST_BYTE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut k = 0;
    while k < MENTIONED.len() {
        let first = MENTIONED[k][0];
        table[first as usize] |= 1 << k;
        table[first.to_ascii_uppercase() as usize] |= 1 << k;
        k += 1;
    }
    table
};

impl Mentions {
    pub fn of(text: &[u8]) -> Mentions {
        let mut bits = 0u8;
        for (i, &c) in text.iter().enumerate() {
            let mut candidates = FIRST_BYTE[c as usize] & !bits;
            while candidates != 0 {
                let k = candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                let word = MENTIONED[k];
                if text
                    .get(i..i + word.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(word))
                {
                    bits |= 1 << k;
                }
            }
        }
        Mentions(bits)
    }

    fn has(self, k: usize) -> bool {
        self.0 & (1 << k) != 0
    }

    pub fn kill(self) -> bool {
        self.has(0)
    }

    pub fn use_(self) -> bool {
        self.has(1)
    }

    pub fn execute(self) -> bool {
        self.has(2)
    }

    /// A word that a change of `sql_mode` or character set needs.
    pub fn lexing_setting(self) -> bool {
        (3..=6).any(|k| self.has(k))
    }
}

/// Does `found` say yes to the tokens of `text` under some reading the
/// server could be using? For guards that must err towards yes.
pub(crate) fn under_some_reading(text: &[u8], found: impl Fn(&mut Lexer<'_>) -> bool) -> bool {
    Rules::every().any(|rules| found(&mut Lexer::new(text, rules)))
}

/// Is `word` (ASCII, any case) a word of `text`'s code under some reading?
pub(crate) fn has_word(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
        && under_some_reading(text, |lexer| {
            std::iter::from_fn(|| lexer.next())
                .any(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(word)))
        })
}

/// Just enough of MySQL's lexer to tell code from strings and comments.
pub(crate) struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    rules: Rules,
    /// Where the last token returned by `next` starts.
    token_start: usize,
    /// Ordinary comments skipped so far (`#`, `-- `, `/* */`).
    comments: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(b: &'a [u8], rules: Rules) -> Lexer<'a> {
        Lexer {
            b,
            i: 0,
            rules,
            token_start: 0,
            comments: 0,
        }
    }

    /// The byte range of the last token `next` returned.
    pub(crate) fn token_span(&self) -> std::ops::Range<usize> {
        self.token_start..self.i
    }

    /// The next byte the lexer will read.
    pub(crate) fn position(&self) -> usize {
        self.i
    }

    /// Step over one byte (the `/` of a `*/` the caller has handled).
    pub(crate) fn skip_byte(&mut self) {
        self.i = (self.i + 1).min(self.b.len());
    }

    /// How many ordinary comments have been skipped so far.
    pub(crate) fn comments_skipped(&self) -> usize {
        self.comments
    }

    /// Skip what the server skips for an executable comment it does not run:
    /// everything up to the first `*/`, quotes or not. `None` if there is no
    /// `*/`, or another `/*` comes first (nesting, which the two servers
    /// handle differently).
    pub(crate) fn skip_to_comment_end(&mut self) -> Option<()> {
        let rest = self.b.get(self.i..)?;
        let close = rest.windows(2).position(|w| w == b"*/")?;
        if rest[..close].windows(2).any(|w| w == b"/*") {
            return None;
        }
        self.i += close + 2;
        Some(())
    }

    fn peek(&self, at: usize) -> Option<u8> {
        self.b.get(self.i + at).copied()
    }

    /// Under multi-byte rules, is the byte at `i + at` the first of a
    /// two-byte character? Second bytes are 0x40 or above in every
    /// multi-byte client character set, so a quote, `;` or comment mark is
    /// never swallowed; a `\\` or a backtick can be.
    fn pair_at(&self, at: usize) -> bool {
        self.rules.multibyte
            && self.peek(at).is_some_and(|c| (0x81..=0xfe).contains(&c))
            && self.peek(at + 1).is_some_and(|c| c >= 0x40)
    }

    /// Identifier characters; non-ASCII bytes only under multi-byte rules
    /// (otherwise they separate words, so nothing glued to `KILL` hides it).
    fn is_word_byte(&self, c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || (self.rules.multibyte && c >= 0x80)
    }

    /// A version number right after an executable-comment opener: five
    /// digits, or six where a sixth follows (MariaDB reads six; fewer than
    /// five digits are code, not a version).
    fn version_digits(&mut self) -> Option<Version> {
        let digits = |n: usize| (0..n).all(|k| self.peek(k).is_some_and(|c| c.is_ascii_digit()));
        let len = if digits(6) {
            6
        } else if digits(5) {
            5
        } else {
            return None;
        };
        let text = self.b.get(self.i..self.i + len)?;
        let value = text.iter().fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
        self.i += len;
        Some(Version {
            value,
            digits: len as u8,
        })
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if c == b'\n' {
                break;
            }
        }
    }

    fn skip_quoted(&mut self, q: u8, escapes: bool) {
        self.i += 1;
        while let Some(c) = self.peek(0) {
            if self.pair_at(0) {
                self.i += 2;
                continue;
            }
            self.i += 1;
            if escapes && c == b'\\' {
                self.i += 1;
            } else if c == q {
                if self.peek(0) == Some(q) {
                    self.i += 1;
                } else {
                    return;
                }
            }
        }
    }

    pub(crate) fn next(&mut self) -> Option<Tok<'a>> {
        loop {
            self.token_start = self.i;
            let c = self.peek(0)?;
            match c {
                c if c.is_ascii_whitespace() => self.i += 1,
                b'#' => {
                    self.comments += 1;
                    self.skip_line()
                }
                // `--` starts a comment only before whitespace or a control character.
                b'-' if self.peek(1) == Some(b'-') && self.peek(2).is_none_or(|c| c <= b' ') => {
                    self.comments += 1;
                    self.skip_line()
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    let marker = match (self.peek(2), self.peek(3)) {
                        (Some(b'!'), _) => Some((Marker::Bang, 3)),
                        (Some(b'M'), Some(b'!')) => Some((Marker::MariaDb, 4)),
                        (Some(b'm'), Some(b'!')) => Some((Marker::LowerM, 4)),
                        _ => None,
                    };
                    if let Some((marker, n)) = marker.filter(|_| !self.rules.skip_executable) {
                        self.i += n;
                        let version = self.version_digits();
                        return Some(Tok::Executable { marker, version });
                    }
                    self.comments += 1;
                    // An ordinary comment; unterminated runs to the end (the
                    // server refuses that text anyway).
                    let rest = self.b.get(self.i + 2..).unwrap_or_default();
                    self.i = match rest.windows(2).position(|w| w == b"*/") {
                        Some(p) => self.i + 2 + p + 2,
                        None => self.b.len(),
                    };
                }
                b'\'' => {
                    self.skip_quoted(c, self.rules.escape_single);
                    return Some(Tok::Quoted);
                }
                b'"' => {
                    self.skip_quoted(c, self.rules.escape_double);
                    return Some(Tok::Quoted);
                }
                b'`' => {
                    self.skip_quoted(c, false);
                    return Some(Tok::Quoted);
                }
                b';' => {
                    self.i += 1;
                    return Some(Tok::Semi);
                }
                c if self.is_word_byte(c) => {
                    let start = self.i;
                    while let Some(c) = self.peek(0) {
                        if self.pair_at(0) {
                            self.i += 2;
                        } else if self.is_word_byte(c) {
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                    return Some(Tok::Word(&self.b[start..self.i]));
                }
                c => {
                    self.i += 1;
                    return Some(Tok::Punct(c));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mentions;

    #[test]
    fn mentions_find_each_word_in_any_case_and_nothing_else() {
        let none = Mentions::of(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1");
        assert!(!none.kill() && !none.use_() && !none.execute() && !none.lexing_setting());
        let all = Mentions::of(b"KiLl uSe ExEcUtE SQL_MODE nAmEs");
        assert!(all.kill() && all.use_() && all.execute() && all.lexing_setting());
        assert!(Mentions::of(b"SELECT * FROM users").use_());
        assert!(Mentions::of(b"SET CHARSET gbk").lexing_setting());
        assert!(Mentions::of(b"set character set gbk").lexing_setting());
        assert!(!Mentions::of(b"kil").kill());
    }
}
