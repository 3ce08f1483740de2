//! Reading received mail: the messages of an mbox, and each one's headers and text decoded
//! (RFC 2047 words, quoted-printable or base64 bodies, charsets) for showing and quoting.

use mailparse::{MailHeaderMap, ParsedMail};

use super::{MailError, Mailbox, MessageId};

/// The messages of an mbox (mboxo or mboxrd), each its headers and body, unquoted and
/// otherwise as received: what `git am` is given stays byte for byte what the list sent.
pub fn mbox_messages(text: &str) -> Vec<String> {
    let mut messages: Vec<String> = Vec::new();
    let mut cur: Option<String> = None;
    let mut prev_blank = true;
    for line in text.split_inclusive('\n') {
        if line.starts_with("From ") && prev_blank {
            if let Some(m) = cur.take() {
                messages.push(m);
            }
            cur = Some(String::new());
            prev_blank = false;
            continue;
        }
        prev_blank = line.trim_end_matches(['\r', '\n']).is_empty();
        if let Some(m) = cur.as_mut() {
            // mboxrd quoting: ">From " (and ">>From ") lose one '>'.
            let unquoted = match line.strip_prefix('>') {
                Some(rest) if rest.trim_start_matches('>').starts_with("From ") => rest,
                _ => line,
            };
            m.push_str(unquoted);
        }
    }
    if let Some(m) = cur.take() {
        messages.push(m);
    }
    messages
}

/// One received message: the raw text kept for `git am`, the rest decoded for people.
#[derive(Clone, Debug)]
pub struct Received {
    /// As received (one message of the mbox, or a `git format-patch` file).
    pub raw: String,
    pub subject: Option<String>,
    /// The Date header as written (quoted back in "On …, X wrote:").
    pub date: Option<String>,
    pub message_id: Option<MessageId>,
    /// The thread above this message, oldest first.
    pub references: Vec<MessageId>,
    /// The text a reader sees: the first text/plain part, transfer encoding and charset
    /// undone, with LF line ends.
    pub body: String,
}

impl Received {
    pub fn parse(raw: String) -> Result<Received, MailError> {
        let mail = parse(&raw)?;
        let headers = mail.get_headers();
        let value = |name: &str| headers.get_first_value(name).map(|v| v.trim().to_string());
        let ids = |name: &str| -> Vec<MessageId> {
            let Some(v) = value(name) else {
                return vec![];
            };
            let ids = match mailparse::msgidparse(&v) {
                Ok(list) => list.iter().map(|id| MessageId::new(id)).collect(),
                // Not bracketed as RFC 5322 asks: taken as one id, as mail clients do.
                Err(_) => vec![MessageId::new(&v)],
            };
            // `<>` names no message: nothing can be threaded to it.
            ids.into_iter()
                .filter(|id| !id.as_str().is_empty())
                .collect()
        };
        let body = text_part(&mail).map(body_text).unwrap_or_default();
        Ok(Received {
            subject: value("Subject"),
            date: value("Date"),
            message_id: ids("Message-ID").into_iter().next(),
            references: ids("References"),
            body,
            raw,
        })
    }

    /// The addresses of an address header (From, To, Cc), names decoded; none when absent.
    pub fn addresses(&self, header: &str) -> Result<Vec<Mailbox>, MailError> {
        let mail = parse(&self.raw)?;
        let mut out = Vec::new();
        for h in mail
            .headers
            .iter()
            .filter(|h| h.get_key_ref().eq_ignore_ascii_case(header))
        {
            let list = mailparse::addrparse_header(h).map_err(|e| MailError::BadHeader {
                header: header.to_string(),
                why: e.to_string(),
            })?;
            for a in list.iter() {
                match a {
                    mailparse::MailAddr::Single(s) => out.push(Mailbox::from(s.clone())),
                    mailparse::MailAddr::Group(g) => {
                        out.extend(g.addrs.iter().cloned().map(Mailbox::from))
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse(raw: &str) -> Result<ParsedMail<'_>, MailError> {
    // A `git format-patch` file starts with the mbox separator line, which is no header.
    let text = match raw.strip_prefix("From ") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, r)| r),
        None => raw,
    };
    mailparse::parse_mail(text.as_bytes()).map_err(|e| MailError::Unreadable(e.to_string()))
}

/// The part a reader reads: the message itself unless it is multipart, then the first
/// text/plain part that is not an attachment.
fn text_part<'a>(mail: &'a ParsedMail<'a>) -> Option<&'a ParsedMail<'a>> {
    if !mail.ctype.mimetype.starts_with("multipart/") {
        return mail.ctype.mimetype.starts_with("text/").then_some(mail);
    }
    mail.parts().skip(1).find(|p| {
        p.ctype.mimetype == "text/plain"
            && p.get_content_disposition().disposition != mailparse::DispositionType::Attachment
    })
}

fn body_text(part: &ParsedMail) -> String {
    // Lists carry much undeclared 8-bit text, nearly all UTF-8; mailparse would read it as
    // US-ASCII (Windows-1252 in practice) and garble every name and arrow.
    let text = if part.ctype.params.contains_key("charset") {
        part.get_body().ok()
    } else {
        part.get_body_raw()
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    text.unwrap_or_default().replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects_are_decoded_and_folds_joined() {
        let m = Received::parse(
            "From: =?UTF-8?q?Ren=C3=A9_M=C3=BCller?= <rene@example.org>\n\
             To: \"Williams, Dan\" <dan@example.org>,\n Jan Kara <jack@suse.cz>\n\
             Subject: =?utf-8?B?W1BBVENIXSBmc2RheDog4oCmIGZpeA==?=\n\
             Message-ID: <abc@example.org>\n\
             References: <a@x> <> <b@x>\n\n\
             body\n"
                .to_string(),
        )
        .unwrap();
        assert_eq!(m.subject.as_deref(), Some("[PATCH] fsdax: … fix"));
        let from = m.addresses("From").unwrap();
        assert_eq!(from[0].display_name(), "René Müller");
        let to = m.addresses("to").unwrap();
        assert_eq!(
            to.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["Williams, Dan <dan@example.org>", "Jan Kara <jack@suse.cz>"]
        );
        assert_eq!(m.message_id, Some(MessageId::new("abc@example.org")));
        assert_eq!(m.references.len(), 2);
        assert_eq!(m.references[1].to_string(), "<b@x>");
        assert!(m.addresses("Cc").unwrap().is_empty());
    }

    #[test]
    fn quoted_printable_and_base64_bodies_are_decoded() {
        let qp = Received::parse(
            "Subject: x\nContent-Type: text/plain; charset=utf-8\n\
             Content-Transfer-Encoding: quoted-printable\n\n\
             This passes the =E2=80=9Cndctl:dax=E2=80=9D suite, a very long line that is =\n\
             soft-broken.\n"
                .to_string(),
        )
        .unwrap();
        assert_eq!(
            qp.body,
            "This passes the “ndctl:dax” suite, a very long line that is soft-broken.\n"
        );
        let b64 = Received::parse(
            "Subject: x\nContent-Type: text/plain; charset=iso-8859-1\n\
             Content-Transfer-Encoding: base64\n\nVGVzdGVkIGJ5IErpcvRtZS4K\n"
                .to_string(),
        )
        .unwrap();
        assert_eq!(b64.body, "Tested by Jérôme.\n");
        // Undeclared 8-bit text is taken as UTF-8.
        let raw = Received::parse("Subject: x\n\nTested → ok\n".to_string()).unwrap();
        assert_eq!(raw.body, "Tested → ok\n");
    }

    #[test]
    fn the_text_of_a_multipart_message_is_its_first_plain_part() {
        let m = Received::parse(
            "Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
             --b\nContent-Type: text/plain; charset=utf-8\n\nthe text\n\
             --b\nContent-Type: text/plain\nContent-Disposition: attachment; filename=config\n\n\
             CONFIG_FS_DAX=y\n--b--\n"
                .to_string(),
        )
        .unwrap();
        assert_eq!(m.body, "the text");
    }

    #[test]
    fn a_format_patch_file_is_read_past_its_separator_line() {
        let m = Received::parse(
            "From 0123 Mon Sep 17 00:00:00 2001\nFrom: A <a@x>\nSubject: [PATCH] one\n\nx\n"
                .to_string(),
        )
        .unwrap();
        assert_eq!(m.subject.as_deref(), Some("[PATCH] one"));
        assert_eq!(m.addresses("From").unwrap()[0].addr, "a@x");
    }
}
