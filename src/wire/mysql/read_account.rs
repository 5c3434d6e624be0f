//! What a MySQL/MariaDB account can write, read from its own `SHOW GRANTS`;
//! and, for the quickstart only, creating a read-only demo account.
//!
//! `wire::read_account` refuses logins on a `read_only` level whose account
//! has any of the [`findings`] below. They come from the grant lines the
//! server shows the account itself, through a side connection as that
//! account:
//!
//! * `SHOW GRANTS`: the account's own grants, the roles granted to it, and
//!   (MariaDB 10.11+) what is granted to PUBLIC;
//! * for each role granted to it, the role's grants with everything the role
//!   itself holds: on MariaDB `SET ROLE r; SHOW GRANTS` (which lists the
//!   roles granted to `r` and theirs too), on MySQL
//!   `SHOW GRANTS FOR CURRENT_USER() USING r, …`.
//!
//! Each line is read with an allow-list: the only privileges a read account
//! may hold are [`READ_PRIVILEGES`] (SELECT, SHOW VIEW, SHOW DATABASES,
//! USAGE), anywhere. Every other privilege is a finding, whatever it is —
//! INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, EXECUTE, EVENT,
//! TRIGGER, LOCK TABLES, CREATE TEMPORARY TABLES, FILE, SUPER, PROXY, ALL
//! PRIVILEGES, a MySQL 8 dynamic privilege, or one a later release adds.
//! So are `WITH GRANT OPTION` and a role held `WITH ADMIN OPTION` (the
//! account could grant), and a line jitgate cannot read.
//!
//! PROCESS is not a write, but it is refused too: it shows every session's
//! running statement, other people's literals included, which is more than
//! reading the target's data. So are the replication and monitoring
//! privileges (REPLICATION CLIENT, BINLOG MONITOR, …): a read account needs
//! none of them.
//!
//! Not covered: what MySQL lets any account do without a privilege (change
//! its own password with `SET PASSWORD`, user variables, `GET_LOCK`, `KILL`
//! of its own threads, i.e. the level's other sessions); MySQL 8's
//! `mandatory_roles` (granted to everybody, shown by neither statement
//! unless active); a view or routine created `SQL SECURITY DEFINER` by a
//! writer that a SELECT reaches (a view calling a stored function that
//! writes runs with its definer's rights); and grants made between two
//! checks (see `RECHECK_AFTER`).

use super::upstream::{self, Upstream, UpstreamError};
use crate::config::{LevelConfig, TargetConfig};

/// The privileges a read account may hold.
pub const READ_PRIVILEGES: &[&str] = &["USAGE", "SELECT", "SHOW VIEW", "SHOW DATABASES"];

/// More roles than this behind one account is not a read account.
const MAX_ROLES: usize = 64;

/// The ways the level's account can write (empty: none); `Err` says why the
/// check did not finish.
pub async fn findings(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
) -> Result<Vec<String>, String> {
    let mut up = upstream::side_connection(target, level_name, level)
        .await
        .map_err(|e| e.to_string())?;
    let wait = target
        .connect_timeout
        .max(std::time::Duration::from_secs(5));
    let found = tokio::time::timeout(wait, grant_findings(&mut up, target, level_name))
        .await
        .map_err(|_| "the server did not answer in time".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    upstream::quit(up.reader.get_mut()).await;
    found
}

async fn grant_findings(
    up: &mut Upstream,
    target: &TargetConfig,
    level_name: &str,
) -> Result<Vec<String>, UpstreamError> {
    let mut query = async |sql: &str| -> Result<Vec<String>, UpstreamError> {
        let rows = upstream::query_rows(up, target, level_name, sql).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
    };
    let own = query("SHOW GRANTS").await?;
    let mut lines: Vec<(String, String)> = own.into_iter().map(|l| ("it".to_owned(), l)).collect();
    let roles: Vec<String> = lines
        .iter()
        .filter_map(|(_, l)| match parse(l) {
            Line::Roles { roles, .. } => Some(roles),
            _ => None,
        })
        .flatten()
        .collect();
    if roles.len() > MAX_ROLES {
        return Ok(vec![format!("it holds {} roles", roles.len())]);
    }
    if !roles.is_empty() {
        let version = query("SELECT VERSION()").await?;
        let mariadb = version.iter().any(|v| v.contains("MariaDB"));
        if mariadb {
            for role in &roles {
                query(&format!("SET ROLE {role}")).await?;
                for l in query("SHOW GRANTS").await? {
                    lines.push((format!("its role {role}"), l));
                }
            }
            query("SET ROLE NONE").await?;
        } else {
            let using = roles.join(", ");
            for l in query(&format!("SHOW GRANTS FOR CURRENT_USER() USING {using}")).await? {
                lines.push(("its roles".to_owned(), l));
            }
        }
    }
    let mut found = Vec::new();
    for (who, line) in &lines {
        for f in judge(line) {
            let f = format!("{who} {f}");
            if !found.contains(&f) {
                found.push(f);
            }
        }
    }
    Ok(found)
}

/// What one grant line gives, in words ("has INSERT on `app`.*"); empty
/// when it only reads.
pub fn judge(line: &str) -> Vec<String> {
    match parse(line) {
        Line::Privileges {
            privileges,
            object,
            grant_option,
        } => {
            let mut out: Vec<String> = privileges
                .into_iter()
                .filter(|p| !READ_PRIVILEGES.contains(&p.as_str()))
                .map(|p| format!("has {p} on {object}"))
                .collect();
            if grant_option {
                out.push(format!(
                    "may grant its privileges on {object} (WITH GRANT OPTION)"
                ));
            }
            out
        }
        Line::Roles { roles, admin } if admin => {
            vec![format!(
                "may grant role {} to others (WITH ADMIN OPTION)",
                roles.join(", ")
            )]
        }
        Line::Roles { .. } | Line::Ignored => Vec::new(),
        // Never the line itself: it may carry a password hash.
        Line::Unreadable(start) => vec![format!(
            "has a grant jitgate cannot read (a line of SHOW GRANTS starting with `{start}`)"
        )],
    }
}

/// A grant line, read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `GRANT <privileges> ON <object> TO … [WITH GRANT OPTION]`.
    Privileges {
        /// Upper case, single spaces, column lists dropped: `SHOW VIEW`.
        privileges: Vec<String>,
        object: String,
        grant_option: bool,
    },
    /// `GRANT <roles> TO … [WITH ADMIN OPTION]`; each role as SQL that names it.
    Roles { roles: Vec<String>, admin: bool },
    /// `SET DEFAULT ROLE …` (MariaDB) and `REVOKE …` (MySQL's partial
    /// revokes): they take nothing away from what the GRANT lines give.
    Ignored,
    /// Anything else; the line's first word.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// A `quoted` identifier (its text) or a 'string' / "string".
    Ident(String),
    Str,
    /// A parenthesised group (a column list), skipped whole.
    Group,
    Punct(char),
}

/// Split a line into tokens; `None` when a quote or parenthesis is left open.
fn tokens(line: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '`' => {
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '`' if chars.peek() == Some(&'`') => {
                            chars.next();
                            s.push('`');
                        }
                        '`' => break,
                        c => s.push(c),
                    }
                }
                out.push(Token::Ident(s));
            }
            '\'' | '"' => {
                let quote = c;
                loop {
                    match chars.next()? {
                        '\\' => {
                            chars.next()?;
                        }
                        q if q == quote && chars.peek() == Some(&quote) => {
                            chars.next();
                        }
                        q if q == quote => break,
                        _ => {}
                    }
                }
                out.push(Token::Str);
            }
            '(' => {
                let mut depth = 1;
                let mut quote: Option<char> = None;
                while depth > 0 {
                    let c = chars.next()?;
                    match (quote, c) {
                        (Some(q), c) if c == q => quote = None,
                        (Some(_), _) => {}
                        (None, '`' | '\'' | '"') => quote = Some(c),
                        (None, '(') => depth += 1,
                        (None, ')') => depth -= 1,
                        _ => {}
                    }
                }
                out.push(Token::Group);
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        w.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word(w.to_ascii_uppercase()));
            }
            c => out.push(Token::Punct(c)),
        }
    }
    Some(out)
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x == w)
}

fn parse(line: &str) -> Line {
    let first = line.split_whitespace().next().unwrap_or("").to_owned();
    let unreadable = || Line::Unreadable(first.chars().take(20).collect());
    let Some(t) = tokens(line) else {
        return unreadable();
    };
    match t.first() {
        Some(Token::Word(w)) if w == "REVOKE" => return Line::Ignored,
        Some(Token::Word(w)) if w == "SET" && t.get(1).is_some_and(|t| is_word(t, "DEFAULT")) => {
            return Line::Ignored;
        }
        Some(Token::Word(w)) if w == "GRANT" => {}
        _ => return unreadable(),
    }
    let Some(to) = t.iter().position(|x| is_word(x, "TO")) else {
        return unreadable();
    };
    let rest = &t[to + 1..];
    let with = |option: &str| {
        rest.windows(3)
            .any(|w| is_word(&w[0], "WITH") && is_word(&w[1], option) && is_word(&w[2], "OPTION"))
    };
    match t.iter().position(|x| is_word(x, "ON")) {
        Some(on) if on < to => {
            let Some(privileges) = privileges(&t[1..on]) else {
                return unreadable();
            };
            Line::Privileges {
                privileges,
                object: object(&t[on + 1..to]),
                grant_option: with("GRANT"),
            }
        }
        _ => match roles(&t[1..to]) {
            Some(roles) => Line::Roles {
                roles,
                admin: with("ADMIN"),
            },
            None => unreadable(),
        },
    }
}

/// `SELECT (a), SHOW VIEW` → ["SELECT", "SHOW VIEW"]; `None` if anything
/// but words, column lists and commas is there.
fn privileges(t: &[Token]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for part in t.split(|x| *x == Token::Punct(',')) {
        let mut words = Vec::new();
        for x in part {
            match x {
                Token::Word(w) => words.push(w.as_str()),
                Token::Group => {}
                _ => return None,
            }
        }
        if words.is_empty() {
            return None;
        }
        out.push(words.join(" "));
    }
    Some(out)
}

/// `` `app`.* `` → "`app`.*", for messages.
fn object(t: &[Token]) -> String {
    let mut s = String::new();
    let mut after_word = false;
    for x in t {
        if after_word && matches!(x, Token::Word(_) | Token::Ident(_)) {
            s.push(' ');
        }
        after_word = matches!(x, Token::Word(_));
        match x {
            Token::Word(w) => s.push_str(w),
            Token::Ident(i) => s.push_str(&quote(i)),
            Token::Punct(c) => s.push(*c),
            Token::Str => s.push_str("'…'"),
            Token::Group => s.push_str("(…)"),
        }
    }
    s
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `r1`, `r2`@`%` `` → the roles as SQL that names them.
fn roles(t: &[Token]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for part in t.split(|x| *x == Token::Punct(',')) {
        let name = match part {
            [Token::Ident(r)] => quote(r),
            [Token::Word(r)] => quote(&r.to_ascii_lowercase()),
            [Token::Ident(r), Token::Punct('@'), Token::Ident(h)] => {
                format!("{}@{}", quote(r), quote(h))
            }
            _ => return None,
        };
        out.push(name);
    }
    (!out.is_empty()).then_some(out)
}

/// DEMO ONLY (`demo_create_read_accounts_with`): log in as the level
/// `with`'s account and create the account of each read-only level of
/// `target` on this machine's addresses (`localhost`, `127.0.0.1`, `::1`),
/// without a password, with SELECT on the target's database only. An
/// existing account is only granted that. Refuses unless the connection
/// reached a loopback address.
pub async fn create_demo_accounts(
    target: &TargetConfig,
    with: &str,
) -> Result<Vec<String>, String> {
    let creator = target
        .levels
        .get(with)
        .ok_or_else(|| format!("target {} has no level {with}", target.name))?;
    let mut up = upstream::side_connection(target, with, creator)
        .await
        .map_err(|e| e.to_string())?;
    let created = create_on(&mut up, target, with).await;
    upstream::quit(up.reader.get_mut()).await;
    created
}

async fn create_on(
    up: &mut Upstream,
    target: &TargetConfig,
    with: &str,
) -> Result<Vec<String>, String> {
    if !up
        .reader
        .get_mut()
        .peer_addr()
        .is_some_and(|a| a.ip().is_loopback())
    {
        return Err(format!(
            "{} did not lead to a loopback address; demo accounts are only created on this machine",
            target.address
        ));
    }
    let mut made = Vec::new();
    for level in target.levels.values().filter(|l| l.read_only) {
        // Config validation allows only [A-Za-z0-9_] names here.
        let accounts = ["localhost", "127.0.0.1", "::1"]
            .map(|host| format!("'{}'@'{host}'", level.user))
            .join(", ");
        for sql in [
            format!("CREATE USER IF NOT EXISTS {accounts}"),
            format!(
                "GRANT SELECT ON {}.* TO {accounts}",
                quote(&target.database)
            ),
        ] {
            upstream::execute(up, target, with, &sql)
                .await
                .map_err(|e| e.to_string())?;
        }
        made.push(level.user.clone());
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_only_lines_are_read_only() {
        for line in [
            "GRANT USAGE ON *.* TO `jg_read`@`%` IDENTIFIED BY PASSWORD '*B69027D44F6E5EDC07F1AEAD1477967B16F28227'",
            "GRANT SELECT ON `app`.* TO `jg_read`@`%`",
            "GRANT SELECT (`a`, `b`), SHOW VIEW ON `test`.`t` TO `u`@`%`",
            "GRANT SHOW DATABASES ON *.* TO 'u'@'localhost'",
            "GRANT `reader` TO `u`@`%`",
            "SET DEFAULT ROLE `reader` FOR `u`@`%`",
            "REVOKE SELECT ON `mysql`.* FROM `u`@`%`",
        ] {
            assert_eq!(judge(line), Vec::<String>::new(), "{line}");
        }
    }

    #[test]
    fn every_other_privilege_is_named() {
        assert_eq!(
            judge("GRANT SELECT, INSERT, UPDATE (`name`) ON `app`.* TO `u`@`%`"),
            ["has INSERT on `app`.*", "has UPDATE on `app`.*"]
        );
        assert_eq!(
            judge("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"),
            [
                "has ALL PRIVILEGES on *.*",
                "may grant its privileges on *.* (WITH GRANT OPTION)"
            ]
        );
        assert_eq!(
            judge("GRANT EXECUTE ON PROCEDURE `mysql`.`p` TO `u`@`%`"),
            ["has EXECUTE on PROCEDURE `mysql`.`p`"]
        );
        assert_eq!(
            judge("GRANT PROCESS, CREATE TEMPORARY TABLES ON *.* TO u@'%'"),
            ["has PROCESS on *.*", "has CREATE TEMPORARY TABLES on *.*"]
        );
        assert_eq!(
            judge("GRANT BACKUP_ADMIN,SYSTEM_VARIABLES_ADMIN ON *.* TO `u`@`%`"),
            [
                "has BACKUP_ADMIN on *.*",
                "has SYSTEM_VARIABLES_ADMIN on *.*"
            ]
        );
        assert_eq!(
            judge("GRANT SELECT ON `app`.* TO `u`@`%` WITH GRANT OPTION"),
            ["may grant its privileges on `app`.* (WITH GRANT OPTION)"]
        );
        assert_eq!(
            judge("GRANT `writer` TO `u`@`%` WITH ADMIN OPTION"),
            ["may grant role `writer` to others (WITH ADMIN OPTION)"]
        );
    }

    #[test]
    fn quoted_text_cannot_fake_a_clause_and_is_never_repeated() {
        // A password hash (or a quoted name) holding keywords changes nothing.
        assert_eq!(
            judge(
                "GRANT SELECT ON `a ON b`.* TO `u`@`%` IDENTIFIED BY PASSWORD 'WITH GRANT OPTION'"
            ),
            Vec::<String>::new()
        );
        let f = judge("GRANT SELECT ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD 'secret");
        assert_eq!(f.len(), 1);
        assert!(!f[0].contains("secret"), "{f:?}");
        assert_eq!(
            judge("ALTER USER u IDENTIFIED BY 'secret'"),
            ["has a grant jitgate cannot read (a line of SHOW GRANTS starting with `ALTER`)"]
        );
    }

    #[test]
    fn role_lines_name_their_roles_as_sql() {
        assert_eq!(
            parse("GRANT `r``1`, `r2`@`%` TO `u`@`%`"),
            Line::Roles {
                roles: vec!["`r``1`".to_owned(), "`r2`@`%`".to_owned()],
                admin: false
            }
        );
    }
}
