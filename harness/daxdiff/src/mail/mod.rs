//! Mail as the kernel lists carry it: series and cover letters read from an mbox, decoded
//! for showing and quoting, and the messages daxdiff writes (reports, replies) built for sending.

mod read;
mod write;

use std::fmt;

pub use read::{mbox_messages, Received};
pub use write::{sender, sender_from_git, Attachment, Outgoing};

/// One address of a message, with the display name when it has one (decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub addr: String,
}

impl Mailbox {
    /// `Name <user@example.org>` or a bare `user@example.org`, as a user types it.
    pub fn parse(text: &str) -> Result<Mailbox, MailError> {
        let bad = |why: &str| MailError::BadAddress {
            text: text.to_string(),
            why: why.to_string(),
        };
        let list = mailparse::addrparse(text).map_err(|e| bad(&e.to_string()))?;
        match list.count_addrs() {
            1 => {}
            0 => return Err(bad("it holds no address")),
            _ => return Err(bad("it holds more than one address")),
        }
        let single = list
            .extract_single_info()
            .ok_or_else(|| bad("a group is not a sender"))?;
        Ok(Mailbox::from(single))
    }

    /// The name a person is called by in "On …, X wrote:": the display name, else the address.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.addr)
    }

    /// The part after `@`, for Message-IDs that are unique because the domain is the sender's.
    pub fn domain(&self) -> &str {
        self.addr.rsplit_once('@').map_or("localhost", |(_, d)| d)
    }
}

impl From<mailparse::SingleInfo> for Mailbox {
    fn from(s: mailparse::SingleInfo) -> Self {
        Mailbox {
            name: s.display_name.filter(|n| !n.trim().is_empty()),
            addr: s.addr,
        }
    }
}

/// As a person reads it (not header-encoded): `Name <addr>`.
impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n} <{}>", self.addr),
            None => f.write_str(&self.addr),
        }
    }
}

/// A Message-ID without its angle brackets (as `msg-id` holds it inside `<…>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageId(String);

impl MessageId {
    /// From a header's text, with or without the brackets.
    pub fn new(id: &str) -> MessageId {
        let id = id.trim();
        let inner = id.strip_prefix('<').unwrap_or(id);
        MessageId(inner.strip_suffix('>').unwrap_or(inner).trim().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// With its brackets, as headers and "git am" threads write it.
impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("`{text}` is not a mail address ({why}); write it as \"Name <user@example.org>\"")]
    BadAddress { text: String, why: String },
    #[error(
        "no sender for the message: pass --from \"Name <user@example.org>\", or set git's \
         identity (git config --global user.name \"Your Name\"; git config --global user.email \
         you@example.org)"
    )]
    NoSender,
    #[error("the {header} header is not a list of addresses ({why}): fix it in the mbox")]
    BadHeader { header: String, why: String },
    #[error("not a mail message: {0}")]
    Unreadable(String),
}
