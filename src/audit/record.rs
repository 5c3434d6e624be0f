//! What an audit record holds.
//!
//! [`AuditEvent`] is one record as its callers fill it in: the event's name
//! and whichever of the optional members apply (a statement, its outcome,
//! who approved what, ...). [`SessionMembers`] is the part that every record
//! of one session repeats, encoded once. How a record becomes a line of the
//! file is `line`'s business; how its members are written as JSON, `json`'s.

use std::time::SystemTime;

use serde::Serialize;

/// One audit record. `time` and `prev` are added by the writer.
#[derive(Debug, Default, Serialize)]
pub struct AuditEvent<'a> {
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<&'a str>,
    /// Statement sequence number within the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<&'a str>,
    /// The statement's exact bytes, base64, when they are not UTF-8:
    /// `statement` then shows them decoded lossily, and this is what was
    /// forwarded (or refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_base64: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'a str>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_rfc3339"
    )]
    pub expires_at: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    /// The access request an event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<&'a str>,
    /// The policy a request was matched to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'a str>,
    /// What an approver or denier wrote with their decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<&'a str>,
    /// The issued credential an event is about (its public id, never its secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<&'a str>,
    /// The same `session`, `identity`, `grant`, `target` and `level` as the
    /// fields above, already encoded: set by `SessionMembers::event`.
    #[serde(skip)]
    pub encoded: Option<&'a SessionMembers>,
}

impl<'a> AuditEvent<'a> {
    pub fn new(event: &'a str) -> Self {
        AuditEvent {
            event,
            ..Default::default()
        }
    }
}

/// How serde writes `expires_at` (the same as `json` writes it by hand).
fn opt_rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

/// The five members every statement record of a session repeats
/// (`session`, `identity`, `grant`, `target`, `level`), JSON-encoded once
/// when the session starts instead of escaped again for every record.
#[derive(Debug)]
pub struct SessionMembers {
    session: String,
    identity: String,
    grant: String,
    target: String,
    level: String,
    /// `,"session":"…",…,"level":"…"`, as [`AuditEvent`] writes them.
    pub(super) json: Box<[u8]>,
}

impl SessionMembers {
    pub(crate) fn new(
        session: &str,
        identity: &str,
        grant: &str,
        target: &str,
        level: &str,
    ) -> Self {
        let mut members = SessionMembers {
            session: session.to_owned(),
            identity: identity.to_owned(),
            grant: grant.to_owned(),
            target: target.to_owned(),
            level: level.to_owned(),
            json: Box::default(),
        };
        let mut json = Vec::new();
        members.event("").write_session_members(&mut json);
        members.json = json.into_boxed_slice();
        members
    }

    /// Whether `event`'s five members are this session's own strings (the
    /// same pointers, not merely equal text: a cheap check).
    pub(super) fn encodes(&self, event: &AuditEvent<'_>) -> bool {
        let same = |field: Option<&str>, ours: &String| {
            field.is_some_and(|f| std::ptr::eq(f, ours.as_str()))
        };
        same(event.session, &self.session)
            && same(event.identity, &self.identity)
            && same(event.grant, &self.grant)
            && same(event.target, &self.target)
            && same(event.level, &self.level)
    }

    /// A record of this session: its five members set, the rest empty.
    pub(crate) fn event<'a>(&'a self, event: &'a str) -> AuditEvent<'a> {
        AuditEvent {
            event,
            session: Some(&self.session),
            identity: Some(&self.identity),
            grant: Some(&self.grant),
            target: Some(&self.target),
            level: Some(&self.level),
            encoded: Some(self),
            ..Default::default()
        }
    }
}

/// Longest client-chosen name (a user or database a login named) kept in a
/// record of a login that did not get in: anyone can knock, so what their
/// records hold must be bounded.
pub(crate) const CLIENT_NAME_MAX_CHARS: usize = 64;

/// `name` as a login record keeps it: at most [`CLIENT_NAME_MAX_CHARS`]
/// characters, a cut one ending in `…` so a reader knows it was cut.
pub(crate) fn client_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(CLIENT_NAME_MAX_CHARS) {
        None => std::borrow::Cow::Borrowed(name),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}…", &name[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_client_names_are_cut_on_a_character_boundary() {
        assert_eq!(client_name("alice"), "alice");
        let exact = "é".repeat(CLIENT_NAME_MAX_CHARS);
        assert_eq!(client_name(&exact), exact);
        let long = "é".repeat(10_000);
        let cut = client_name(&long);
        assert_eq!(cut.chars().count(), CLIENT_NAME_MAX_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
