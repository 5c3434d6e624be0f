//! Wire protocol fronts. Each one authenticates a client, asks the access
//! model for a lease (`AccessModel::authorize`), logs in upstream and relays,
//! writing every statement to the audit log. Fronts do not know each other.

pub mod mysql;
pub mod pg;
pub mod stream;
