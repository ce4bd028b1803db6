//! A logged-in person, as the node knows them now (`access` makes one from
//! the session of a request; `pages` shows their menu).

use super::text::Text;
use crate::identity::{PeerIdentity, Role};

pub struct Person {
    /// The identity the node's functions act as (and the audit log names).
    pub who: PeerIdentity,
    pub name: String,
    pub role: Role,
    /// This session's CSRF token, for the forms of the page.
    pub csrf: String,
    pub text: &'static Text,
    /// The language the person chose (a catalogue tag), if any.
    pub language: Option<String>,
    /// This request's place in the person's quota (the Operator service's,
    /// shared with their certificate), held until the answer.
    pub _permit: crate::node::admission::Permit,
}
