//! Which PostgreSQL operators a text calls, read the way the server's lexer
//! reads them.
//!
//! An operator is a function call: `CREATE OPERATOR` binds a symbol to any
//! function, and a user-defined symbol (`a %%% b`, `a OPERATOR(public.+) b`)
//! can run code that writes. jitgate knows the built-in operator names, so a
//! text that calls any other is unknown.
//!
//! sqlparser splits runs of operator characters differently from the server
//! (`@+` is one operator to PostgreSQL, `@` and `+` to sqlparser), so the
//! operators are found here on the raw text, with the server's rules: a run
//! of operator characters ends before `--` or `/*`, and loses trailing `+`
//! and `-` unless it holds one of `~ ! @ # % ^ & | \` ?` (scan.l).
//!
//! What this cannot see: a built-in symbol defined again for a user's types
//! (`CREATE OPERATOR + (LEFTARG = money2, …)`), which only the types of the
//! operands tell apart. The read-only account and the read-only transaction
//! of a read level are the wall there.

/// Operator names of PostgreSQL's own catalog: `SELECT DISTINCT oprname FROM
/// pg_operator WHERE oid < 16384` on PostgreSQL 15, plus `!=` (which the
/// server reads as `<>`) and `=>` (named arguments, not an operator).
const BUILT_IN: &[&str] = &[
    "!!", "!~", "!~*", "!~~", "!~~*", "#", "##", "#-", "#>", "#>>", "%", "&", "&&", "&<", "&<|",
    "&>", "*", "*<", "*<=", "*<>", "*=", "*>", "*>=", "+", "-", "->", "->>", "-|-", "/", "<",
    "<->", "<<", "<<=", "<<|", "<=", "<>", "<@", "<^", "=", ">", ">=", ">>", ">>=", ">^", "?",
    "?#", "?&", "?-", "?-|", "?|", "?||", "@", "@-@", "@>", "@?", "@@", "@@@", "^", "^@", "|",
    "|&>", "|/", "|>>", "||", "||/", "~", "~*", "~<=~", "~<~", "~=", "~>=~", "~>~", "~~", "~~*",
    "!=", "=>",
];

/// Characters an operator is made of.
fn is_operator_byte(b: u8) -> bool {
    matches!(
        b,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

/// Characters that let an operator end in `+` or `-`.
fn allows_trailing_sign(b: u8) -> bool {
    matches!(
        b,
        b'~' | b'!' | b'@' | b'#' | b'%' | b'^' | b'&' | b'|' | b'`' | b'?'
    )
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The first operator in `text` that is not one of PostgreSQL's own, if any.
/// String literals, quoted identifiers, dollar quotes and comments are
/// skipped; a text whose literal or comment never ends is left to the
/// parser, which refuses it.
pub(crate) fn unknown_operator(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                // E'…' strings take backslash escapes.
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && (i < 2 || !is_identifier_byte(bytes[i - 2]));
                i = end_of_quoted(bytes, i, b'\'', escapes);
            }
            b'"' => i = end_of_quoted(bytes, i, b'"', false),
            b'$' if i == 0 || !is_identifier_byte(bytes[i - 1]) => {
                i = end_of_dollar_quote(bytes, i);
            }
            // A `--` comment ends at a line feed or a carriage return.
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n' || c == b'\r')
                    .map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = end_of_comment(bytes, i),
            _ if is_operator_byte(b) => {
                let length = operator_length(&bytes[i..]);
                let operator = &text[i..i + length];
                if !BUILT_IN.contains(&operator) {
                    return Some(operator);
                }
                i += length;
            }
            _ if is_identifier_byte(b) => {
                while i < bytes.len() && is_identifier_byte(bytes[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The length of the operator token at the start of `run` (which starts
/// with an operator byte), as scan.l cuts it.
fn operator_length(run: &[u8]) -> usize {
    let mut n = 0;
    while n < run.len() && is_operator_byte(run[n]) {
        // A comment starts inside the run: the operator ends before it.
        if n > 0 && matches!(&run[n..], [b'-', b'-', ..] | [b'/', b'*', ..]) {
            break;
        }
        n += 1;
    }
    if n > 1
        && matches!(run[n - 1], b'+' | b'-')
        && !run[..n - 1].iter().any(|&b| allows_trailing_sign(b))
    {
        while n > 1 && matches!(run[n - 1], b'+' | b'-') {
            n -= 1;
        }
    }
    n
}

/// Past the closing quote of a literal or quoted identifier opening at `at`;
/// a doubled quote is part of it.
fn end_of_quoted(bytes: &[u8], at: usize, quote: u8, escapes: bool) -> usize {
    let mut i = at + 1;
    while i < bytes.len() {
        if escapes && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Past a `$tag$ … $tag$` string opening at `at`; just past the `$` if what
/// opens there is not one (`$1`, a lone `$`).
fn end_of_dollar_quote(bytes: &[u8], at: usize) -> usize {
    let tag_end = bytes[at + 1..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80))
        .map(|n| at + 1 + n);
    let Some(tag_end) = tag_end.filter(|&end| bytes[end] == b'$') else {
        return at + 1;
    };
    if bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
        return at + 1;
    }
    let tag = &bytes[at..=tag_end];
    bytes[tag_end + 1..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(bytes.len(), |n| tag_end + 1 + n + tag.len())
}

/// Past the end of a (nesting) block comment opening at `at`.
fn end_of_comment(bytes: &[u8], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_operators_in_ordinary_sql_are_known() {
        for sql in [
            "SELECT a + -1, b->>'k', c::int, d <> e, f != g, h || i FROM t WHERE x >= 1",
            "SELECT * FROM t WHERE a @> ARRAY[1] AND b ~* 'x' AND c IS NOT NULL",
            "SELECT f(a => 1), 2*-3, 4 /-5, 'a'||'b'",
            "SELECT '%%%' , \"a%%%b\", $$ @+ $$, $x$ %% $x$, E'\\' %%%', 1 -- %%%",
            "SELECT 1 /* %%% /* nested %%% */ still %%% */ + 2",
            "SELECT $1 + $2, a$b$c FROM t",
            "SELECT 1 *-- comment\n 2",
        ] {
            assert_eq!(unknown_operator(sql), None, "{sql}");
        }
    }

    #[test]
    fn other_operators_are_found_as_the_server_cuts_them() {
        for (sql, found) in [
            ("SELECT a %%% b", "%%%"),
            ("SELECT a @+ b", "@+"),
            ("SELECT a ~- b", "~-"),
            ("SELECT a <=> b", "<=>"),
            ("SELECT a OPERATOR(public.===) b", "==="),
            ("SELECT 'x' ||| 'y'", "|||"),
            ("SELECT a `` b", "``"),
            ("SELECT 2 --x\r%%% 3", "%%%"),
        ] {
            assert_eq!(unknown_operator(sql), Some(found), "{sql}");
        }
        // Trailing signs come off where nothing allows them: `+-` is `+ -`.
        assert_eq!(operator_length(b"+-1"), 1);
        assert_eq!(operator_length(b"*--x"), 1);
        assert_eq!(operator_length(b"@-1"), 2);
    }
}
