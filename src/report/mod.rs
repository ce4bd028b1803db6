//! The vocabulary of a report: categories, priorities, classifications,
//! case statuses and their transitions, the strict validation of what an
//! analyst submits (`validate`), what identifies a report's content
//! (`content`), and how a case looks to its readers (`view`). The signed
//! payloads built from these are the `wire` room's.

pub mod content;
pub mod near;
pub mod validate;
pub mod view;

/// A report may pass through at most this many relays.
pub const MAX_HOPS: usize = 8;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    /// Machine-readable reason code, e.g. `url-scheme`.
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

impl InvalidInput {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidInput {
            code,
            field: field.into(),
            message: message.into(),
        }
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            pub fn parse(s: &str) -> Result<Self, InvalidInput> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(InvalidInput::new(
                        concat!("bad-", stringify!($name)),
                        stringify!($name),
                        // The refused value is never echoed: it may be
                        // anything (a URL pasted in the wrong field, a
                        // megabyte), and refusals reach logs and the
                        // audit log.
                        format!("not one of: {}", [$($s),+].join(", ")),
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What kind of content a report is about.
    Category {
        Csam => "csam",
        ChildExploitation => "child-exploitation",
        Grooming => "grooming",
        Trafficking => "trafficking",
        Ncii => "ncii",
        Other => "other",
    }
);

string_enum!(
    /// The legal classification an origin gives a report: `baseline`
    /// (INTERPOL baseline, illegal everywhere) or `national` (illegal under
    /// the origin's national law only). It decides where the jurisdiction
    /// policy lets a report go (`routing::policy`).
    Classification {
        Baseline => "baseline",
        National => "national",
    }
);

impl Classification {
    /// From a request or a signed payload: empty means baseline.
    pub fn parse_or_baseline(s: &str) -> Result<Self, InvalidInput> {
        if s.is_empty() {
            return Ok(Classification::Baseline);
        }
        Classification::parse(s).map_err(|mut e| {
            e.field = "classification".into();
            e.code = "bad-classification";
            e
        })
    }

    /// As carried in the signed payload: empty for baseline, so reports
    /// without a national classification encode exactly as before.
    pub fn wire(self) -> &'static str {
        match self {
            Classification::Baseline => "",
            Classification::National => "national",
        }
    }
}

string_enum!(
    /// Urgent reports (imminent danger, ongoing abuse) overtake bulk ones.
    Priority {
        Bulk => "bulk",
        Urgent => "urgent",
    }
);

string_enum!(
    /// The status of a case at the receiving hotline.
    CaseStatus {
        Received => "received",
        InReview => "in-review",
        IllegalBaseline => "illegal-baseline",
        IllegalNational => "illegal-national",
        NotIllegal => "not-illegal",
        NoticeSent => "notice-sent",
        Removed => "removed",
        StillOnline => "still-online",
        Moved => "moved",
        ReferredToLawEnforcement => "referred-to-law-enforcement",
        Retracted => "retracted",
    }
);

impl CaseStatus {
    /// The statuses a case may move to from this one.
    pub fn next(self) -> &'static [CaseStatus] {
        use CaseStatus::*;
        match self {
            Received => &[InReview, Retracted],
            InReview => &[IllegalBaseline, IllegalNational, NotIllegal, Retracted],
            IllegalBaseline | IllegalNational => &[NoticeSent, ReferredToLawEnforcement, Retracted],
            NoticeSent => &[Removed, StillOnline, Moved, ReferredToLawEnforcement],
            StillOnline => &[NoticeSent, Removed, Moved, ReferredToLawEnforcement],
            ReferredToLawEnforcement => &[NoticeSent, Removed, StillOnline, Moved],
            NotIllegal | Removed | Moved | Retracted => &[],
        }
    }

    pub fn can_move_to(self, to: CaseStatus) -> bool {
        self.next().contains(&to)
    }
}

/// Where a report is from this node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Received from a peer: we are the hotline working the case.
    Incoming,
    /// Submitted here and sent to another hotline (or queued, or no hotline).
    Outgoing,
    /// Submitted here about content hosted in our own country: worked here.
    Local,
    /// Passed through this node as a relay: worked by its destination.
    Relayed,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
            Direction::Local => "local",
            Direction::Relayed => "relayed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "incoming" => Some(Direction::Incoming),
            "outgoing" => Some(Direction::Outgoing),
            "local" => Some(Direction::Local),
            "relayed" => Some(Direction::Relayed),
            _ => None,
        }
    }
}

/// A hash of reported media (never the media itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaHash {
    pub algorithm: String,
    pub value: String,
}

/// A validated report as an analyst submitted it, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportDraft {
    pub urls: Vec<String>,
    pub category: Category,
    pub hosting_ip: Option<std::net::IpAddr>,
    pub priority: Priority,
    pub notes: String,
    pub hashes: Vec<MediaHash>,
    pub classification: Classification,
}
