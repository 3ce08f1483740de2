//! Writing mail: the sender (`--from` or git's identity) and a message as RFC 5322 and MIME
//! want it, plain text a person can read in the file, attachments as parts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId as BuilderId;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use super::{MailError, Mailbox, MessageId};

/// Who the message is from: `--from` when given, else git's `user.name` and `user.email`
/// (what `git send-email` and `git commit` would use).
pub fn sender(from: Option<&str>) -> Result<Mailbox, MailError> {
    match from {
        Some(text) => Mailbox::parse(text),
        None => sender_from_git(|| Command::new("git")),
    }
}

/// git's identity, with `git` making the command (tests point it at a config of their own).
pub fn sender_from_git(git: impl Fn() -> Command) -> Result<Mailbox, MailError> {
    let get = |key: &str| {
        let out = git().args(["config", "--get", key]).output().ok()?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !v.is_empty()).then_some(v)
    };
    let (Some(name), Some(addr)) = (get("user.name"), get("user.email")) else {
        return Err(MailError::NoSender);
    };
    let addr = match Mailbox::parse(&addr) {
        Ok(m) => m.addr,
        Err(MailError::BadAddress { text, why }) => {
            return Err(MailError::BadAddress {
                text,
                why: format!("git config user.email: {why}"),
            })
        }
        Err(e) => return Err(e),
    };
    Ok(Mailbox {
        name: Some(name),
        addr,
    })
}

/// A file sent along with the text, by the name it has in the finding's directory.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub name: String,
    pub content: Vec<u8>,
}

/// A message to write: headers that address and thread it, the text, and attachments.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub subject: String,
    /// The message this one answers.
    pub in_reply_to: Option<MessageId>,
    /// The thread above this message, oldest first, ending with `in_reply_to`.
    pub references: Vec<MessageId>,
    /// Plain text, LF line ends.
    pub body: String,
    pub attachments: Vec<Attachment>,
}

impl Outgoing {
    /// The message, dated now, with a new Message-ID.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_at(SystemTime::now(), &self.new_message_id())
    }

    /// The message as a file holds it: LF line ends (as mbox files, `git format-patch` and
    /// `git send-email` have them), headers MIME-encoded where they are not ASCII.
    pub fn to_bytes_at(&self, date: SystemTime, id: &MessageId) -> Vec<u8> {
        let secs = date
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut m = MessageBuilder::new()
            .from(address(&self.from))
            .date(secs)
            .message_id(id.as_str().to_string());
        if !self.to.is_empty() {
            m = m.to(list(&self.to));
        }
        if !self.cc.is_empty() {
            m = m.cc(list(&self.cc));
        }
        // ASCII as is (folded when long): the builder's text header would RFC 2047-encode a
        // long one, and `[PATCH …]` subjects are read raw on the lists.
        m = if self.subject.is_ascii() {
            m.header("Subject", Raw::new(self.subject.as_str()))
        } else {
            m.subject(self.subject.as_str())
        };
        if let Some(r) = &self.in_reply_to {
            m = m.in_reply_to(r.as_str().to_string());
        }
        if !self.references.is_empty() {
            m = m.references(BuilderId::new_list(
                self.references.iter().map(|r| r.as_str().to_string()),
            ));
        }
        let text = text_part(&self.body);
        let m = if self.attachments.is_empty() {
            m.body(text)
        } else {
            let mut parts = vec![text.inline()];
            parts.extend(self.attachments.iter().map(attachment_part));
            m.body(MimePart::new("multipart/mixed", BodyPart::Multipart(parts)))
        };
        let mut out = Vec::new();
        m.write_to(&mut out)
            .expect("writing to memory does not fail");
        crlf_to_lf(out)
    }

    /// What a command prints of it: the headers a reader checks, then the text; attachments
    /// by name only.
    pub fn preview(&self) -> String {
        let mut s = format!("From: {}\n", self.from);
        let join = |l: &[Mailbox]| l.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        if !self.to.is_empty() {
            s.push_str(&format!("To: {}\n", join(&self.to).join(", ")));
        }
        if !self.cc.is_empty() {
            s.push_str(&format!("Cc: {}\n", join(&self.cc).join(", ")));
        }
        s.push_str(&format!("Subject: {}\n", self.subject));
        if let Some(r) = &self.in_reply_to {
            s.push_str(&format!("In-Reply-To: {r}\n"));
        }
        s.push('\n');
        s.push_str(&self.body);
        if !self.attachments.is_empty() {
            let names: Vec<&str> = self.attachments.iter().map(|a| a.name.as_str()).collect();
            s.push_str(&format!("\n[attached: {}]\n", names.join(", ")));
        }
        s
    }

    /// `<seconds.nanoseconds.random.daxdiff@sender's domain>`: unique without asking this
    /// machine its name, the way `git send-email` makes its own.
    fn new_message_id(&self) -> MessageId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut h = RandomState::new().build_hasher();
        h.write_u128(now.as_nanos());
        h.write_u32(std::process::id());
        MessageId::new(&format!(
            "{}.{:09}.{:016x}.daxdiff@{}",
            now.as_secs(),
            now.subsec_nanos(),
            h.finish(),
            self.from.domain()
        ))
    }
}

fn address(m: &Mailbox) -> Address<'static> {
    Address::new_address(m.name.clone(), m.addr.clone())
}

fn list(l: &[Mailbox]) -> Address<'static> {
    Address::new_list(l.iter().map(address).collect())
}

/// Plain text in the encoding that leaves it readable in the file: 7bit for ASCII, 8bit for
/// UTF-8 (as `git format-patch` writes; the lists take both). Only text no mail can carry
/// as is (lines over 998 bytes, control characters) is left to the builder's
/// quoted-printable or base64.
fn text_part(text: &str) -> MimePart<'static> {
    let part = MimePart::new("text/plain", BodyPart::Text(text.to_string().into()));
    let unsendable = text.lines().any(|l| l.len() > 998)
        || text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t');
    match (unsendable, text.is_ascii()) {
        (true, _) => part,
        (false, true) => part.transfer_encoding("7bit"),
        (false, false) => part.transfer_encoding("8bit"),
    }
}

fn attachment_part(a: &Attachment) -> MimePart<'static> {
    let part = match std::str::from_utf8(&a.content) {
        Ok(text) => text_part(&text.replace("\r\n", "\n")),
        Err(_) => MimePart::new(
            "application/octet-stream",
            BodyPart::Binary(a.content.clone().into()),
        ),
    };
    part.attachment(a.name.clone())
}

fn crlf_to_lf(bytes: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut it = bytes.into_iter().peekable();
    while let Some(b) = it.next() {
        if b == b'\r' && it.peek() == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::Received;
    use mailparse::MailHeaderMap;

    fn mailbox(name: &str, addr: &str) -> Mailbox {
        Mailbox {
            name: Some(name.into()),
            addr: addr.into(),
        }
    }

    fn reply() -> Outgoing {
        Outgoing {
            from: mailbox("Zoë Reviewer", "zoe@example.org"),
            to: vec![mailbox("Dan Williams", "dan.j.williams@intel.com")],
            cc: vec![
                mailbox("Williams, Dan", "dan@example.org"),
                Mailbox {
                    name: None,
                    addr: "linux-mm@kvack.org".into(),
                },
            ],
            subject: "Re: [PATCH v2 00/18] Fix the DAX-gup mistake …".into(),
            in_reply_to: Some(MessageId::new("<cover@example.org>")),
            references: vec![
                MessageId::new("v1@example.org"),
                MessageId::new("cover@example.org"),
            ],
            body: "Tested → both kernels.\n\n-- \ndaxdiff\n".into(),
            attachments: vec![],
        }
    }

    #[test]
    fn the_headers_parse_back_as_written() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_663_299_308);
        let bytes = reply().to_bytes_at(at, &MessageId::new("1.2.daxdiff@example.org"));
        assert!(!bytes.contains(&b'\r'), "LF line ends");
        let text = String::from_utf8(bytes.clone()).unwrap();
        let m = mailparse::parse_mail(&bytes).unwrap();
        let h = m.get_headers();
        let get = |k: &str| {
            h.get_first_value(k)
                .unwrap_or_else(|| panic!("no {k}:\n{text}"))
        };
        assert_eq!(get("Date"), "Fri, 16 Sep 2022 03:35:08 +0000");
        assert_eq!(get("Message-ID"), "<1.2.daxdiff@example.org>");
        assert_eq!(get("In-Reply-To"), "<cover@example.org>");
        assert_eq!(get("References"), "<v1@example.org> <cover@example.org>");
        assert_eq!(get("MIME-Version"), "1.0");
        assert_eq!(m.ctype.mimetype, "text/plain");
        assert_eq!(m.ctype.charset, "utf-8");
        assert_eq!(get("Content-Transfer-Encoding"), "8bit");
        assert_eq!(
            get("Subject"),
            "Re: [PATCH v2 00/18] Fix the DAX-gup mistake …"
        );
        let r = Received::parse(text.clone()).unwrap();
        assert_eq!(
            r.addresses("From").unwrap(),
            [mailbox("Zoë Reviewer", "zoe@example.org")]
        );
        assert_eq!(
            r.addresses("To").unwrap()[0].addr,
            "dan.j.williams@intel.com"
        );
        let cc = r.addresses("Cc").unwrap();
        assert_eq!(cc[0], mailbox("Williams, Dan", "dan@example.org"));
        assert_eq!(cc[1].addr, "linux-mm@kvack.org");
        // 8bit: the text reads in the file as it was written, signature separator included.
        assert!(
            text.ends_with("\n\nTested → both kernels.\n\n-- \ndaxdiff\n"),
            "{text}"
        );
        assert_eq!(
            m.get_body().unwrap(),
            "Tested → both kernels.\n\n-- \ndaxdiff\n"
        );
    }

    #[test]
    fn a_long_ascii_subject_is_folded_not_encoded() {
        let mut o = reply();
        o.subject = "[REPORT] fs/dax: WARNING in dax_disassociate_entry on 7.3.4+deb13-amd64, \
                     not on 6.12.117+deb12-amd64"
            .into();
        let text = String::from_utf8(o.to_bytes()).unwrap();
        assert!(
            text.contains(
                "\nSubject: [REPORT] fs/dax: WARNING in dax_disassociate_entry on\n \
                 7.3.4+deb13-amd64, not on 6.12.117+deb12-amd64\n"
            ),
            "{text}"
        );
        assert_eq!(Received::parse(text).unwrap().subject, Some(o.subject));
    }

    #[test]
    fn attachments_are_parts_after_the_inline_text() {
        let mut o = reply();
        o.body = "See the attachments.\n".into();
        o.attachments = vec![
            Attachment {
                name: "config-a".into(),
                content: b"CONFIG_FS_DAX=y\n".to_vec(),
            },
            Attachment {
                name: "repro".into(),
                content: vec![0x7f, b'E', b'L', b'F', 0xff, 0],
            },
        ];
        let bytes = o.to_bytes();
        let m = mailparse::parse_mail(&bytes).unwrap();
        assert_eq!(m.ctype.mimetype, "multipart/mixed");
        assert_eq!(m.subparts.len(), 3);
        assert_eq!(m.subparts[0].get_body().unwrap(), "See the attachments.\n");
        let config = &m.subparts[1];
        assert_eq!(config.ctype.mimetype, "text/plain");
        assert_eq!(
            config
                .get_content_disposition()
                .params
                .get("filename")
                .map(String::as_str),
            Some("config-a")
        );
        assert_eq!(config.get_body().unwrap(), "CONFIG_FS_DAX=y\n");
        assert_eq!(
            m.subparts[2].get_body_raw().unwrap(),
            [0x7f, b'E', b'L', b'F', 0xff, 0]
        );
        let id = mailparse::parse_mail(&bytes)
            .unwrap()
            .get_headers()
            .get_first_value("Message-ID");
        assert!(id.unwrap().ends_with(".daxdiff@example.org>"));
    }

    #[test]
    fn the_sender_is_from_or_git_identity_else_an_error_naming_both() {
        assert_eq!(
            sender(Some("Zoë Reviewer <zoe@example.org>")).unwrap(),
            mailbox("Zoë Reviewer", "zoe@example.org")
        );
        let e = sender(Some("not an address")).unwrap_err().to_string();
        assert!(e.contains("`not an address` is not a mail address"), "{e}");
        let home = tempfile::tempdir().unwrap();
        let cfg = home.path().join("gitconfig");
        let git = || {
            let mut c = Command::new("git");
            c.current_dir(home.path())
                .env("GIT_CONFIG_GLOBAL", &cfg)
                .env("GIT_CONFIG_NOSYSTEM", "1");
            c
        };
        std::fs::write(&cfg, "").unwrap();
        let e = sender_from_git(git).unwrap_err().to_string();
        assert!(
            e.contains("--from") && e.contains("git config --global user.email"),
            "{e}"
        );
        std::fs::write(&cfg, "[user]\n\tname = Zoë Reviewer\n\temail = zoe\n").unwrap();
        let e = sender_from_git(git).unwrap_err().to_string();
        assert!(
            e.contains("`zoe` is not a mail address (git config user.email: "),
            "{e}"
        );
        std::fs::write(
            &cfg,
            "[user]\n\tname = Zoë Reviewer\n\temail = zoe@example.org\n",
        )
        .unwrap();
        assert_eq!(
            sender_from_git(git).unwrap(),
            mailbox("Zoë Reviewer", "zoe@example.org")
        );
    }
}
