//! The access model's rules and its journal, without sockets: requests,
//! decisions, expiry, and what a restart brings back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::access::journal::JournalError;
use crate::identity::{Identity, ScramVerifier};

const POLICIES: &str = r#"
[[policies]]
name = "dev-read"
targets = ["demo-pg"]
levels = ["read"]
requesters = ["developer"]
max_duration = "1h"
approvals = 1
approvers = ["lead"]

[[policies]]
name = "dev-write"
targets = ["demo-pg"]
levels = ["write"]
requesters = ["developer"]
max_duration = "2h"
approvals = 2
approvers = ["lead", "admin"]

[[policies]]
name = "oncall"
targets = ["*"]
levels = ["*"]
requesters = ["oncall"]
max_duration = "4h"
approvers = ["lead"]
auto_approve = { groups = ["oncall"], max_duration = "15m" }
"#;

/// A data directory, a config and an audit log that outlive model restarts.
struct World {
    dir: tempfile::TempDir,
    config: Arc<Config>,
    audit: Arc<AuditLog>,
}

impl World {
    fn new() -> World {
        World::with_pending_timeout("1h")
    }

    fn with_pending_timeout(timeout: &str) -> World {
        static ALICE_SECRET: OnceLock<String> = OnceLock::new();
        let secret = ALICE_SECRET.get_or_init(|| ScramVerifier::generate("alice"));
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"
data_dir = "{data}"
[listen]
[tls]
cert = "cert.pem"
key = "key.pem"
[audit]
path = "{data}/audit.log"
fsync = "always"
[requests]
pending_timeout = "{timeout}"

[[identities]]
name = "alice"
groups = ["developer"]
secret = "{secret}"

[[targets]]
name = "demo-pg"
protocol = "postgres"
address = "127.0.0.1:5432"
database = "postgres"
[targets.levels.read]
user = "reader"
read_only = true
[targets.levels.write]
user = "writer"

[[targets]]
name = "other-pg"
protocol = "postgres"
address = "127.0.0.1:5433"
database = "postgres"
[targets.levels.read]
user = "reader"
{POLICIES}"#,
            data = dir.path().display(),
        );
        let config = Config::from_toml(&toml, &dir.path().join("jitgate.toml")).unwrap();
        let audit = AuditLog::open(&config.audit).unwrap();
        World {
            dir,
            config: Arc::new(config),
            audit,
        }
    }

    /// Start (or restart) the model on this world's journal.
    fn open(&self) -> Arc<AccessModel> {
        AccessModel::open(self.config.clone(), self.audit.clone()).unwrap()
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join(JOURNAL_FILE)
    }

    /// The audit records, as JSON.
    fn audit_records(&self) -> Vec<Value> {
        read_json_lines(self.audit.path())
    }

    /// The `event` of every audit record, in order.
    fn audit_events(&self) -> Vec<String> {
        self.audit_records()
            .iter()
            .map(|r| r["event"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn person(name: &str, groups: &[&str]) -> Identity {
    Identity {
        name: name.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        credential: None,
    }
}

fn alice() -> Identity {
    person("alice", &["developer"])
}
fn bob() -> Identity {
    person("bob", &["lead"])
}
fn carol() -> Identity {
    person("carol", &["lead"])
}
/// A developer who also leads: may approve others' requests, never their own.
fn dave() -> Identity {
    person("dave", &["developer", "lead"])
}
fn root() -> Identity {
    person("root", &["admin"])
}
fn olga() -> Identity {
    person("olga", &["oncall"])
}

fn ask(target: &str, level: &str, duration: &str) -> NewRequest {
    NewRequest {
        target: target.to_owned(),
        level: level.to_owned(),
        duration: humantime::parse_duration(duration).unwrap(),
        reason: "INC-42".to_owned(),
    }
}

fn drain(rx: &mut broadcast::Receiver<AccessEvent>) -> Vec<&'static str> {
    let mut events = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => events.push(e.event),
            Err(TryRecvError::Empty) => return events,
            Err(e) => panic!("{e}"),
        }
    }
}

fn close_to(a: SystemTime, b: SystemTime, within: Duration) -> bool {
    let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
    d <= within
}

#[tokio::test]
async fn self_approval_is_forbidden_whatever_the_groups() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&dave(), ask("demo-pg", "read", "30m"))
        .unwrap();
    let err = model.approve(&dave(), &r.id, None).unwrap_err();
    assert!(matches!(err, AccessError::OwnApproval), "{err:?}");
    assert!(err.to_string().contains("your own request"), "{err}");
    assert!(matches!(
        model.deny(&dave(), &r.id, None),
        Err(AccessError::OwnDenial)
    ));
    assert_eq!(
        model.get_request(&r.id).unwrap().state,
        RequestState::Pending
    );
    assert!(model.authorize("dave", "demo-pg").is_err());
}

#[tokio::test]
async fn approver_outside_the_policy_is_forbidden_even_an_admin() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "30m"))
        .unwrap();
    // An admin sees every request, so is told why not.
    let err = model.approve(&root(), &r.id, None).unwrap_err();
    assert!(matches!(err, AccessError::NotAnApprover { .. }), "{err:?}");
    assert!(err.to_string().contains("dev-read"), "{err}");
    // Others who may not decide it do not see it: it does not exist for them.
    let absent = model
        .approve(&olga(), "r_0123456789abcdef", None)
        .unwrap_err();
    for outsider in [olga(), person("eve", &["developer"])] {
        let err = model.approve(&outsider, &r.id, None).unwrap_err();
        assert!(
            matches!(err, AccessError::RequestNotFound { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string().replace(&r.id, "<id>"),
            absent.to_string().replace("r_0123456789abcdef", "<id>")
        );
        for err in [
            model.deny(&outsider, &r.id, None).unwrap_err(),
            model.cancel(&outsider, &r.id).unwrap_err(),
            model.request_seen_by(&outsider, &r.id).unwrap_err(),
        ] {
            assert!(
                matches!(err, AccessError::RequestNotFound { .. }),
                "{err:?}"
            );
            assert!(!err.to_string().contains("alice"), "{err}");
        }
    }
    assert!(model.get_request(&r.id).unwrap().approvals.is_empty());
    // An approver of the policy may.
    let r = model.approve(&bob(), &r.id, Some("ok".into())).unwrap();
    assert_eq!(r.state, RequestState::Approved);
}

#[tokio::test]
async fn two_approvals_required_one_is_not_enough_two_create_one_grant() {
    let w = World::new();
    let model = w.open();
    let mut events = model.subscribe();
    let r = model
        .request(&alice(), ask("demo-pg", "write", "2h"))
        .unwrap();
    assert_eq!(r.approvals_required, 2);

    let r = model
        .approve(&bob(), &r.id, Some("looks fine".into()))
        .unwrap();
    assert_eq!(r.state, RequestState::Pending);
    assert!(r.grant.is_none());
    assert!(model.authorize("alice", "demo-pg").is_err());

    let approved_at = SystemTime::now();
    let r = model.approve(&root(), &r.id, None).unwrap();
    assert_eq!(r.state, RequestState::Approved);
    let grant_id = r.grant.clone().unwrap();
    let lease = model.authorize("alice", "demo-pg").unwrap();
    let grant = lease.grant;
    assert_eq!(grant.id, grant_id);
    assert_eq!(grant.level, "write");
    assert_eq!(grant.granted_by, "root");
    assert_eq!(grant.approved_by, ["bob", "root"]);
    assert_eq!(grant.policy.as_deref(), Some("dev-write"));
    assert_eq!(grant.request.as_deref(), Some(r.id.as_str()));
    assert!(close_to(
        grant.expires_at,
        approved_at + Duration::from_secs(2 * 3600),
        Duration::from_secs(2)
    ));
    assert_eq!(model.grants.active(SystemTime::now()).len(), 1);

    assert_eq!(
        drain(&mut events),
        [
            "request_created",
            "request_approved",
            "request_approved",
            "grant_created"
        ]
    );
    let records = w.audit_records();
    let approvals: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "request_approved")
        .collect();
    assert_eq!(approvals.len(), 2);
    assert_eq!(approvals[0]["by"], "bob");
    assert_eq!(approvals[0]["comment"], "looks fine");
    assert_eq!(approvals[0]["request"], r.id.as_str());
    assert!(w.audit_events().contains(&"grant_created".to_owned()));
}

#[tokio::test]
async fn the_same_approver_twice_counts_once() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "write", "1h"))
        .unwrap();
    let first = model.approve(&bob(), &r.id, None).unwrap();
    let again = model.approve(&bob(), &r.id, Some("again".into())).unwrap();
    assert_eq!(again.state, RequestState::Pending);
    assert_eq!(again.approvals.len(), 1);
    assert_eq!(again.approvals[0].at, first.approvals[0].at);
    assert!(model.authorize("alice", "demo-pg").is_err());
    let approvals = w
        .audit_events()
        .iter()
        .filter(|e| *e == "request_approved")
        .count();
    assert_eq!(approvals, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_create_exactly_one_grant() {
    for _ in 0..20 {
        let w = World::new();
        let model = w.open();
        let r = model
            .request(&alice(), ask("demo-pg", "read", "10m"))
            .unwrap();
        let start = Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = [bob(), carol()]
            .into_iter()
            .map(|approver| {
                let model = model.clone();
                let id = r.id.clone();
                let start = start.clone();
                tokio::task::spawn_blocking(move || {
                    start.wait();
                    model.approve(&approver, &id, None)
                })
            })
            .collect();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.unwrap());
        }
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(AccessError::NotPending { .. })))
        );
        assert_eq!(model.grants.active(SystemTime::now()).len(), 1);
    }
}

#[tokio::test]
async fn denied_request_gives_no_grant() {
    let w = World::new();
    let model = w.open();
    let mut events = model.subscribe();
    let r = model
        .request(&alice(), ask("demo-pg", "write", "1h"))
        .unwrap();
    model.approve(&bob(), &r.id, None).unwrap();
    let r = model
        .deny(&carol(), &r.id, Some("not today".into()))
        .unwrap();
    assert_eq!(r.state, RequestState::Denied);
    assert_eq!(r.denial.as_ref().unwrap().by, "carol");
    assert!(r.grant.is_none());
    assert!(model.authorize("alice", "demo-pg").is_err());
    assert!(model.grants.active(SystemTime::now()).is_empty());
    assert!(matches!(
        model.approve(&root(), &r.id, None),
        Err(AccessError::NotPending { .. })
    ));
    assert_eq!(
        drain(&mut events),
        ["request_created", "request_approved", "request_denied"]
    );
    let denial = w
        .audit_records()
        .into_iter()
        .find(|r| r["event"] == "request_denied")
        .unwrap();
    assert_eq!(denial["by"], "carol");
    assert_eq!(denial["comment"], "not today");
}

#[tokio::test]
async fn request_above_the_policy_maximum_is_refused_with_the_policy_named() {
    let w = World::new();
    let model = w.open();
    let err = model
        .request(&alice(), ask("demo-pg", "read", "2h"))
        .unwrap_err();
    let AccessError::NoPolicy(_) = err else {
        panic!("{err:?}")
    };
    let msg = err.to_string();
    assert!(
        msg.contains(
            "no policy lets alice (groups: developer) request demo-pg at level read for 2h"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("policy `dev-read` allows demo-pg read up to 1h for group developer"),
        "{msg}"
    );
    // A target no developer policy covers names the one that does.
    let msg = model
        .request(&alice(), ask("other-pg", "read", "10m"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("policy `oncall` allows other-pg any level up to 4h for group oncall"),
        "{msg}"
    );
    assert!(!msg.contains("dev-read"), "{msg}");
    assert!(w.audit_events().is_empty());
}

#[tokio::test]
async fn bad_requests_are_invalid() {
    let w = World::new();
    let model = w.open();
    type IsTheCause = fn(&AccessError) -> bool;
    let cases: [(NewRequest, &str, IsTheCause); 4] = [
        (
            NewRequest {
                reason: "  ".into(),
                ..ask("demo-pg", "read", "10m")
            },
            "reason is required",
            |e| matches!(e, AccessError::MissingReason),
        ),
        (ask("nope-pg", "read", "10m"), "does not exist", |e| {
            matches!(e, AccessError::UnknownTarget { .. })
        }),
        (ask("demo-pg", "admin", "10m"), "has no level", |e| {
            matches!(e, AccessError::UnknownLevel { .. })
        }),
        (ask("demo-pg", "read", "500ms"), "at least 1s", |e| {
            matches!(e, AccessError::DurationTooShort)
        }),
    ];
    for (req, why, is_the_cause) in cases {
        let err = model.request(&alice(), req).unwrap_err();
        assert!(is_the_cause(&err), "{err:?}");
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[tokio::test]
async fn pending_request_times_out() {
    let w = World::with_pending_timeout("200ms");
    let model = w.open();
    let mut events = model.subscribe();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = model.get_request(&r.id).unwrap();
    assert_eq!(r.state, RequestState::Expired);
    assert!(matches!(
        model.approve(&bob(), &r.id, None),
        Err(AccessError::NotPending { .. })
    ));
    assert!(model.authorize("alice", "demo-pg").is_err());
    assert_eq!(drain(&mut events), ["request_created", "request_expired"]);
    assert_eq!(w.audit_events(), ["request_created", "request_expired"]);
}

#[tokio::test]
async fn a_decision_after_the_timeout_finds_the_request_expired() {
    let w = World::with_pending_timeout("200ms");
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    // Block the runtime's only thread, so the timer cannot fire first.
    std::thread::sleep(Duration::from_millis(300));
    let err = model.approve(&bob(), &r.id, None).unwrap_err();
    assert!(matches!(err, AccessError::NotPending { .. }), "{err:?}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(model.authorize("alice", "demo-pg").is_err());
}

#[tokio::test]
async fn only_the_requester_cancels_and_only_while_pending() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    assert!(matches!(
        model.cancel(&bob(), &r.id),
        Err(AccessError::NotTheRequester { .. })
    ));
    let cancelled = model.cancel(&alice(), &r.id).unwrap();
    assert_eq!(cancelled.state, RequestState::Cancelled);
    assert!(matches!(
        model.cancel(&alice(), &r.id),
        Err(AccessError::NotPending { .. })
    ));
    assert!(matches!(
        model.approve(&bob(), &r.id, None),
        Err(AccessError::NotPending { .. })
    ));

    let r = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    model.approve(&bob(), &r.id, None).unwrap();
    assert!(matches!(
        model.cancel(&alice(), &r.id),
        Err(AccessError::NotPending { .. })
    ));
    assert!(matches!(
        model.cancel(&alice(), "r_nope"),
        Err(AccessError::RequestNotFound { .. })
    ));
    assert!(matches!(
        model.approve(&bob(), "r_nope", None),
        Err(AccessError::RequestNotFound { .. })
    ));
    assert!(w.audit_events().contains(&"request_cancelled".to_owned()));
}

#[tokio::test]
async fn auto_approval_creates_the_grant_and_is_still_announced() {
    let w = World::new();
    let model = w.open();
    let mut events = model.subscribe();
    let r = model
        .request(&olga(), ask("other-pg", "read", "15m"))
        .unwrap();
    assert_eq!(r.state, RequestState::Approved);
    assert!(r.auto_approved);
    let grant = model.authorize("olga", "other-pg").unwrap().grant;
    assert_eq!(Some(&grant.id), r.grant.as_ref());
    assert_eq!(grant.granted_by, "policy:oncall");
    assert_eq!(
        drain(&mut events),
        ["request_created", "request_approved", "grant_created"]
    );
    assert_eq!(
        w.audit_events(),
        ["request_created", "request_approved", "grant_created"]
    );

    // Above the auto-approval maximum, an approver must say yes.
    let r = model
        .request(&olga(), ask("demo-pg", "read", "1h"))
        .unwrap();
    assert_eq!(r.state, RequestState::Pending);
    assert!(!r.auto_approved);
}

#[tokio::test]
async fn requesters_see_their_own_and_approvers_what_they_may_decide() {
    let w = World::new();
    let model = w.open();
    let a = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    let d = model
        .request(&dave(), ask("demo-pg", "write", "10m"))
        .unwrap();
    let o = model
        .request(&olga(), ask("demo-pg", "read", "1h"))
        .unwrap();
    let ids = |list: Vec<Request>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(ids(model.requests_for(&alice(), None)), [a.id.as_str()]);
    // dave decides alice's and olga's (lead), sees his own, never decides it.
    assert_eq!(
        ids(model.requests_for(&dave(), None)),
        [a.id.as_str(), d.id.as_str(), o.id.as_str()]
    );
    // root is an approver of dev-write only.
    assert_eq!(ids(model.requests_for(&root(), None)), [d.id.as_str()]);

    model.approve(&bob(), &a.id, None).unwrap();
    assert_eq!(
        ids(model.requests_for(&bob(), Some(RequestState::Pending))),
        [d.id.as_str(), o.id.as_str()]
    );
    assert_eq!(
        ids(model.requests_for(&bob(), Some(RequestState::Approved))),
        [a.id.as_str()]
    );
}

#[tokio::test]
async fn revoke_is_for_the_grantee_an_approver_of_the_policy_or_an_admin() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    model.approve(&bob(), &r.id, None).unwrap();
    let grant = model.authorize("alice", "demo-pg").unwrap().grant;
    assert!(model.may_revoke(&alice(), &grant));
    assert!(model.may_revoke(&carol(), &grant));
    assert!(model.may_revoke(&root(), &grant));
    assert!(!model.may_revoke(&olga(), &grant));
    assert!(!model.may_revoke(&person("eve", &["developer"]), &grant));

    let direct = model
        .grant(NewGrant {
            identity: "alice".into(),
            target: "demo-pg".into(),
            level: "read".into(),
            duration: Duration::from_secs(60),
            reason: "break-glass".into(),
            granted_by: "root".into(),
        })
        .unwrap();
    assert!(model.may_revoke(&alice(), &direct));
    assert!(model.may_revoke(&root(), &direct));
    assert!(!model.may_revoke(&bob(), &direct));

    let mut events = model.subscribe();
    model.revoke(&grant.id, "carol").unwrap();
    assert_eq!(drain(&mut events), ["grant_revoked"]);
    let revoked = w
        .audit_records()
        .into_iter()
        .find(|r| r["event"] == "grant_revoked")
        .unwrap();
    assert_eq!(revoked["by"], "carol");
    assert_eq!(revoked["policy"], "dev-read");
}

#[tokio::test]
async fn nothing_changes_when_the_audit_log_cannot_be_written() {
    let w = World::new();
    let model = w.open();
    let pending = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    let journal_before = std::fs::read(w.journal()).unwrap();
    // Same journal, an audit log on a full disk.
    drop(model);
    let mut config = (*w.config).clone();
    config.audit.path = PathBuf::from("/dev/full");
    let broken = AuditLog::open(&config.audit).unwrap();
    let model = AccessModel::open(Arc::new(config), broken).unwrap();

    let err = model.approve(&bob(), &pending.id, None).unwrap_err();
    assert!(matches!(err, AccessError::Unavailable), "{err:?}");
    assert_eq!(
        model.get_request(&pending.id).unwrap().state,
        RequestState::Pending
    );
    assert!(model.authorize("alice", "demo-pg").is_err());
    assert_eq!(std::fs::read(w.journal()).unwrap(), journal_before);
    assert!(matches!(
        model.request(&alice(), ask("demo-pg", "read", "10m")),
        Err(AccessError::Unavailable)
    ));
    assert_eq!(std::fs::read(w.journal()).unwrap(), journal_before);
}

#[tokio::test]
async fn a_revoke_that_cannot_be_recorded_still_ends_the_grant_and_says_so() {
    let w = World::new();
    let model = w.open();
    let grant_id = model
        .request(&olga(), ask("demo-pg", "read", "10m"))
        .unwrap()
        .grant
        .unwrap();
    // Same journal, restored into a model whose audit log is on a full disk.
    drop(model);
    let mut config = (*w.config).clone();
    config.audit.path = PathBuf::from("/dev/full");
    let broken = AuditLog::open(&config.audit).unwrap();
    let model = AccessModel::open(Arc::new(config), broken).unwrap();
    let mut lease = model.authorize("olga", "demo-pg").unwrap();

    let err = model.revoke(&grant_id, "olga").unwrap_err();
    assert!(
        matches!(&err, GrantError::RevokeNotRecorded { id, .. } if *id == grant_id),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("a restart would restore the grant")
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), lease.ended())
            .await
            .expect("the session's lease ends at once"),
        EndReason::Revoked
    );
    assert!(model.authorize("olga", "demo-pg").is_err());
    assert!(model.grants.get(&grant_id).is_none());
}

// ---- the journal across restarts ---------------------------------------

#[tokio::test]
async fn restart_restores_an_active_grant_with_its_original_expires_at() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "30m"))
        .unwrap();
    model.approve(&bob(), &r.id, None).unwrap();
    let before = model.authorize("alice", "demo-pg").unwrap().grant;
    drop(model);

    let model = w.open();
    let after = model.authorize("alice", "demo-pg").unwrap().grant;
    assert_eq!(after.id, before.id);
    // The journal keeps milliseconds: a restart may shorten a grant by less
    // than one, never lengthen it.
    assert!(after.expires_at <= before.expires_at);
    assert!(close_to(
        after.expires_at,
        before.expires_at,
        Duration::from_millis(1)
    ));
    assert_eq!(after.approved_by, ["bob"]);
    assert_eq!(after.granted_by, "bob");
    let r = model.get_request(&r.id).unwrap();
    assert_eq!(r.state, RequestState::Approved);
    assert_eq!(r.grant.as_deref(), Some(before.id.as_str()));
}

#[tokio::test]
async fn grant_that_expired_while_down_is_not_restored_and_is_recorded() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "1s"))
        .unwrap();
    model.approve(&bob(), &r.id, None).unwrap();
    let grant = model.authorize("alice", "demo-pg").unwrap().grant;
    drop(model);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Stopped before its expiry timer fired: nothing recorded yet.
    assert!(!w.audit_events().contains(&"grant_expired".to_owned()));

    let model = w.open();
    assert!(model.authorize("alice", "demo-pg").is_err());
    assert!(model.grants.get(&grant.id).is_none());
    let expired = w
        .audit_records()
        .into_iter()
        .find(|r| r["event"] == "grant_expired")
        .unwrap();
    assert_eq!(expired["grant"], grant.id.as_str());
    assert!(
        expired["detail"]
            .as_str()
            .unwrap()
            .contains("while jitgate was not running")
    );
    drop(model);

    // Recorded once: a second restart has nothing left to end.
    let _model = w.open();
    let count = w
        .audit_events()
        .iter()
        .filter(|e| *e == "grant_expired")
        .count();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_grant_that_expires_while_running_is_journaled() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&olga(), ask("demo-pg", "read", "1s"))
        .unwrap();
    let grant_id = r.grant.unwrap();
    let mut events = model.subscribe();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(model.grants.get(&grant_id).is_none());
    assert_eq!(drain(&mut events), ["grant_expired"]);
    let lines = read_json_lines(&w.journal());
    assert_eq!(lines.last().unwrap()["event"], "grant_expired");
    drop(model);
    let _model = w.open();
    let count = w
        .audit_events()
        .iter()
        .filter(|e| *e == "grant_expired")
        .count();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn revoked_grant_is_not_restored() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&olga(), ask("demo-pg", "read", "10m"))
        .unwrap();
    let grant_id = r.grant.unwrap();
    model.revoke(&grant_id, "olga").unwrap();
    drop(model);
    let model = w.open();
    assert!(model.authorize("olga", "demo-pg").is_err());
    assert!(model.grants.get(&grant_id).is_none());
}

#[tokio::test]
async fn pending_request_is_restored_with_its_approvals() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "write", "1h"))
        .unwrap();
    model.approve(&bob(), &r.id, Some("one".into())).unwrap();
    drop(model);

    let model = w.open();
    let restored = model.get_request(&r.id).unwrap();
    assert_eq!(restored.state, RequestState::Pending);
    assert_eq!(restored.approvals.len(), 1);
    assert_eq!(restored.approvals[0].comment.as_deref(), Some("one"));
    assert_eq!(
        model.approve(&bob(), &r.id, None).unwrap().approvals.len(),
        1
    );
    let done = model.approve(&carol(), &r.id, None).unwrap();
    assert_eq!(done.state, RequestState::Approved);
    assert_eq!(
        model
            .authorize("alice", "demo-pg")
            .unwrap()
            .grant
            .approved_by,
        ["bob", "carol"]
    );
}

#[tokio::test]
async fn pending_request_restored_still_times_out() {
    let w = World::with_pending_timeout("1s");
    let model = w.open();
    let late = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    drop(model);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let model = w.open();
    // Its time ran out while down: expired at start.
    assert_eq!(
        model.get_request(&late.id).unwrap().state,
        RequestState::Expired
    );

    let soon = model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    drop(model);
    let model = w.open();
    assert_eq!(
        model.get_request(&soon.id).unwrap().state,
        RequestState::Pending
    );
    // Its timer was started again by the replay.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        model.get_request(&soon.id).unwrap().state,
        RequestState::Expired
    );
    let expired = w
        .audit_events()
        .iter()
        .filter(|e| *e == "request_expired")
        .count();
    assert_eq!(expired, 2);
}

#[tokio::test]
async fn torn_last_journal_line_is_tolerated() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&olga(), ask("demo-pg", "read", "10m"))
        .unwrap();
    drop(model);
    let whole = std::fs::read(w.journal()).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(br#"{"at":"2030-01-01T00:00:00.000Z","event":"grant_rev"#);
    std::fs::write(w.journal(), &torn).unwrap();

    let model = w.open();
    assert_eq!(
        model.authorize("olga", "demo-pg").unwrap().grant.id,
        r.grant.unwrap()
    );
    assert_eq!(std::fs::read(w.journal()).unwrap(), whole);
    // And the journal goes on from there.
    model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    drop(model);
    let model = w.open();
    assert_eq!(model.requests_for(&alice(), None).len(), 1);
}

#[tokio::test]
async fn corrupt_journal_line_in_the_middle_refuses_to_start() {
    let w = World::new();
    let model = w.open();
    model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    model
        .request(&alice(), ask("demo-pg", "read", "10m"))
        .unwrap();
    drop(model);
    let text = std::fs::read_to_string(w.journal()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[0] = "{\"at\": garbage";
    std::fs::write(w.journal(), lines.join("\n") + "\n").unwrap();
    let Err(err) = AccessModel::open(w.config.clone(), w.audit.clone()) else {
        panic!("a corrupt journal was accepted")
    };
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[tokio::test]
async fn a_journal_line_that_does_not_fit_the_ones_before_is_refused_by_path_and_line() {
    let w = World::new();
    let model = w.open();
    drop(model);
    std::fs::write(
        w.journal(),
        "{\"at\":\"2025-01-01T00:00:00Z\",\"event\":\"grant_expired\",\"id\":\"g_nope\"}\n",
    )
    .unwrap();
    let Err(err) = AccessModel::open(w.config.clone(), w.audit.clone()) else {
        panic!("a journal ending a grant it never made was accepted")
    };
    let said = err.to_string();
    assert!(
        said.contains(&w.journal().display().to_string())
            && said.contains("line 1")
            && said.contains("g_nope")
            && said.contains("Restore it from a backup"),
        "{said}"
    );
}

#[tokio::test]
async fn a_second_model_on_the_same_journal_is_refused() {
    let w = World::new();
    let _first = w.open();
    let Err(err) = AccessModel::open(w.config.clone(), w.audit.clone()) else {
        panic!("two models share one journal")
    };
    assert!(
        matches!(err, StoreError::Journal(JournalError::Locked(_))),
        "{err}"
    );
}

#[tokio::test]
async fn a_level_named_after_the_target_picks_that_grant() {
    let world = World::new();
    let model = world.open();
    let grant = |level: &str| {
        model
            .grant(NewGrant {
                identity: "alice".into(),
                target: "demo-pg".into(),
                level: level.into(),
                duration: Duration::from_secs(60),
                reason: "both levels".into(),
                granted_by: "root".into(),
            })
            .unwrap()
    };
    let read = grant("read");
    std::thread::sleep(Duration::from_millis(5));
    let write = grant("write");
    // The bare name: the newest grant.
    assert_eq!(
        model.authorize("alice", "demo-pg").unwrap().grant.id,
        write.id
    );
    assert_eq!(
        model.authorize("alice", "demo-pg@read").unwrap().grant.id,
        read.id
    );
    assert_eq!(
        model.authorize("alice", "demo-pg@write").unwrap().grant.id,
        write.id
    );
    let err = model.authorize("alice", "other-pg@read").unwrap_err();
    assert!(
        matches!(err, AuthorizeError::NoGrantAtLevel { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("at level read"), "{err}");
    assert!(matches!(
        model.authorize("alice", "demo-pg@admin").unwrap_err(),
        AuthorizeError::NoGrantAtLevel { .. }
    ));
    for unknown in ["nope@read", "demo-pg@", "@read"] {
        assert!(
            matches!(
                model.authorize("alice", unknown).unwrap_err(),
                AuthorizeError::UnknownTarget(_)
            ),
            "{unknown}"
        );
    }
}

#[tokio::test]
async fn a_lease_carries_its_target_and_level_and_a_gone_level_is_refused_at_authorize() {
    let world = World::new();
    let model = world.open();
    let granted = model
        .grant(NewGrant {
            identity: "alice".into(),
            target: "demo-pg".into(),
            level: "write".into(),
            duration: Duration::from_secs(60),
            reason: "level about to go".into(),
            granted_by: "root".into(),
        })
        .unwrap();
    let lease = model.authorize("alice", "demo-pg").unwrap();
    assert_eq!(lease.grant.id, granted.id);
    assert_eq!(lease.target.name, "demo-pg");
    assert_eq!(lease.level.user, "writer");
    assert!(!lease.level.read_only);
    drop((lease, model));

    // The journal still holds the grant when a restart's config no longer
    // has its level: the login is refused before anything reaches the
    // upstream, with a reason, instead of failing after the upstream login.
    let mut config = (*world.config).clone();
    config.targets[0].levels.remove("write");
    let model = AccessModel::open(Arc::new(config), world.audit.clone()).unwrap();
    match model.authorize("alice", "demo-pg") {
        Err(e @ AuthorizeError::LevelGone { .. }) => {
            assert_eq!(e.known_target(), Some("demo-pg"));
            assert!(e.to_string().contains("no longer configured"), "{e}");
        }
        Err(e) => panic!("{e}"),
        Ok(lease) => panic!("authorized with {:?}", lease.grant),
    }
}

#[tokio::test]
async fn a_request_its_reloaded_policy_no_longer_allows_cannot_be_approved_only_denied() {
    let w = World::new();
    let model = w.open();
    let r = model
        .request(&alice(), ask("demo-pg", "read", "45m"))
        .unwrap();
    // A reload lowers dev-read's longest duration below what was asked.
    let mut narrowed = (*w.config).clone();
    let dev_read = narrowed
        .policies
        .iter_mut()
        .find(|p| p.name == "dev-read")
        .unwrap();
    dev_read.max_duration = Duration::from_secs(30 * 60);
    model.set_config(Arc::new(narrowed));
    let err = model.approve(&bob(), &r.id, None).unwrap_err();
    assert!(matches!(err, AccessError::PolicyNarrowed { .. }), "{err:?}");
    assert!(err.to_string().contains("deny it"), "{err}");
    assert!(model.authorize("alice", "demo-pg").is_err());
    model.deny(&bob(), &r.id, None).unwrap();
    assert_eq!(
        model.get_request(&r.id).unwrap().state,
        RequestState::Denied
    );
}
