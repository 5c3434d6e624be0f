//! What the downward direction learns from each server message: where a
//! statement's answer ends, its outcome and rows for the closing audit
//! record, how the server now reads text, and which answers are jitgate's
//! own to swallow.

use super::*;

/// Update the queue from one server frame; `false` if the frame must not reach the client.
pub(super) fn observe(shared: &Shared<'_>, f: &Frame) -> bool {
    let tag = f.tag();
    if tag == b'S' {
        shared.parameter_status(f.body());
        return true;
    }
    if !matches!(tag, b'C' | b'I' | b's' | b'E' | b'Z') {
        return true;
    }
    let mut forward = true;
    {
        // Finished statements are audited under the lock: both directions
        // run in the session's one task, so nobody waits for it, and no list
        // of them is allocated per message.
        let Ok(mut p) = shared.pipe.lock() else {
            return true;
        };
        match tag {
            b'C' | b'I' | b's' => {
                let outcome = match tag {
                    b'C' => {
                        let mut b = f.body();
                        crate::wire::text(take_cstr_bytes(&mut b).unwrap_or(b"")).into_owned()
                    }
                    b'I' => "EMPTY".to_owned(),
                    _ => "SUSPENDED".to_owned(),
                };
                let rows = tag_rows(&outcome);
                match p.expect.front_mut() {
                    Some(Expect::Execute(_)) => {
                        if let Some(Expect::Execute(mut pe)) = p.expect.pop_front() {
                            pe.rows = rows;
                            shared.audit_end(&pe, &outcome);
                            p.settled_at_ready += usize::from(pe.unsettling);
                        }
                    }
                    Some(Expect::Query(q)) => {
                        q.rows += rows;
                        q.outcome = Some(outcome);
                    }
                    _ => {}
                }
            }
            b'E' => {
                let code = messages::error_code(f.body()).unwrap_or("?????").to_owned();
                match p.expect.front_mut() {
                    Some(Expect::Execute(_)) => {
                        if let Some(Expect::Execute(pe)) = p.expect.pop_front() {
                            shared.audit_end(&pe, &code);
                            p.settled_at_ready += usize::from(pe.unsettling);
                        }
                    }
                    Some(Expect::Query(q)) => q.outcome = Some(code),
                    _ => {}
                }
            }
            b'Z' => {
                p.status = f.body().first().copied().unwrap_or(b'I');
                // Executes before this sync point never ran (an earlier message failed).
                while let Some(Expect::Execute(_)) = p.expect.front() {
                    if let Some(Expect::Execute(pe)) = p.expect.pop_front() {
                        shared.audit_end(&pe, "skipped");
                        p.settled_at_ready += usize::from(pe.unsettling);
                    }
                }
                match p.expect.pop_front() {
                    Some(Expect::Query(q)) => {
                        shared.audit_end(&q, q.outcome.as_deref().unwrap_or("EMPTY"));
                        p.settled_at_ready += usize::from(q.unsettling);
                    }
                    Some(Expect::Sync { forward_ready }) => forward = forward_ready,
                    Some(other) => p.expect.push_front(other),
                    None => {}
                }
                // Whatever they changed was reported before this ReadyForQuery.
                let settled = std::mem::take(&mut p.settled_at_ready);
                if settled > 0 {
                    shared.unsettled.fetch_sub(settled, Ordering::AcqRel);
                }
            }
            _ => {}
        }
    }
    forward
}

/// Rows affected or returned, from a command tag like "SELECT 3" or "INSERT 0 5".
fn tag_rows(tag: &str) -> u64 {
    let counts = matches!(
        tag.split(' ').next(),
        Some("SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY")
    );
    if !counts {
        return 0;
    }
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::tag_rows;

    #[test]
    fn rows_come_from_the_command_tag() {
        assert_eq!(tag_rows("SELECT 3"), 3);
        assert_eq!(tag_rows("INSERT 0 5"), 5);
        assert_eq!(tag_rows("COPY 7"), 7);
        assert_eq!(tag_rows("CREATE TABLE"), 0);
        assert_eq!(tag_rows("BEGIN"), 0);
    }
}
