//! iSCSI CHAP credentials, which the kernel initiator, LIO and tgtd all take.

use serde::{Deserialize, Serialize};
use std::fmt;

/// CHAP credentials an initiator logs in with. Debug output hides the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chap {
    /// The CHAP user name (the spec's `kernel.chap_user`).
    pub username: String,
    /// The CHAP secret (the spec's `kernel.chap_secret`); never logged.
    pub password: String,
}

impl fmt::Debug for Chap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chap")
            .field("username", &self.username)
            .field("password", &"********")
            .finish()
    }
}
