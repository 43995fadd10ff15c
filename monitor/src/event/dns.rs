//! Parsing the DNS messages the kernel captured (with hickory-proto): the question a process
//! asked and the A, AAAA and CNAME records it was answered with.

use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};
use serde::{Deserialize, Serialize};

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The owner name, lowercase, without the final dot.
    pub name: String,
    /// `A`, `AAAA` or `CNAME`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The address, or the CNAME target.
    pub data: String,
    pub ttl: u32,
}

/// What a DNS answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub question: Option<String>,
    pub question_type: Option<String>,
    pub rcode: String,
    pub records: Vec<DnsRecord>,
}

/// Messages shorter than a DNS header are not messages.
pub const MIN_MESSAGE: usize = 12;

fn name(n: &hickory_proto::rr::Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// Parses a captured message; `stream` when it came over TCP (its 2-byte length leads).
/// `None` when it is not a DNS response.
pub fn parse(payload: &[u8], stream: bool) -> Option<DnsAnswer> {
    parse_as(payload, stream, hickory_proto::op::MessageType::Response)
}

/// Parses a question a process sent (its name and type; no records). `None` when it is not a
/// DNS query.
pub fn parse_question(payload: &[u8], stream: bool) -> Option<DnsAnswer> {
    parse_as(payload, stream, hickory_proto::op::MessageType::Query)
}

fn parse_as(
    payload: &[u8],
    stream: bool,
    kind: hickory_proto::op::MessageType,
) -> Option<DnsAnswer> {
    // Over TCP the packet starts with the message's 2-byte length and may hold more than that
    // message (a second answer after it): take the one message.
    let bytes = if stream {
        let (length, rest) = payload.split_at_checked(2)?;
        let declared = u16::from_be_bytes([length[0], length[1]]) as usize;
        &rest[..declared.min(rest.len())]
    } else {
        payload
    };
    if bytes.len() < MIN_MESSAGE {
        return None;
    }
    let message = Message::from_vec(bytes).ok()?;
    if message.message_type() != kind {
        return None;
    }
    let query = message.queries().first();
    let records = message
        .answers()
        .iter()
        .filter_map(|r| {
            let data = match r.data() {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::CNAME(c) => name(&c.0),
                _ => return None,
            };
            Some(DnsRecord {
                name: name(r.name()),
                kind: match r.record_type() {
                    RecordType::A => "A",
                    RecordType::AAAA => "AAAA",
                    _ => "CNAME",
                }
                .into(),
                data,
                ttl: r.ttl(),
            })
        })
        .collect();
    Some(DnsAnswer {
        question: query.map(|q| name(q.name())),
        question_type: query.map(|q| q.query_type().to_string()),
        rcode: message.response_code().to_string(),
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::{MessageType, Query},
        rr::{rdata, Name, Record},
    };

    fn response(q: &str, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_message_type(MessageType::Response);
        m.add_query(Query::query(Name::from_ascii(q).unwrap(), RecordType::A));
        for r in records {
            m.add_answer(r);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_with_cname_chains_parse_over_udp_and_tcp() {
        let alias = Name::from_ascii("www.example.test.").unwrap();
        let target = Name::from_ascii("edge.cdn.test.").unwrap();
        let bytes = response(
            "WWW.Example.test.",
            vec![
                Record::from_rdata(alias, 300, RData::CNAME(rdata::CNAME(target.clone()))),
                Record::from_rdata(target, 60, RData::A(rdata::A::new(10, 0, 0, 7))),
            ],
        );
        let udp = parse(&bytes, false).unwrap();
        assert_eq!(udp.question.as_deref(), Some("www.example.test"));
        assert_eq!(udp.records.len(), 2);
        assert_eq!(
            (udp.records[0].kind.as_str(), udp.records[0].data.as_str()),
            ("CNAME", "edge.cdn.test")
        );
        assert_eq!(
            (udp.records[1].data.as_str(), udp.records[1].ttl),
            ("10.0.0.7", 60)
        );
        let mut tcp = (bytes.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&bytes);
        assert_eq!(parse(&tcp, true), Some(udp.clone()));
        // A segment holding this answer and the start of the next: the first is read.
        let mut two = tcp.clone();
        two.extend_from_slice(&tcp[..20]);
        assert_eq!(parse(&two, true), Some(udp), "two answers in one segment");
    }

    #[test]
    fn queries_garbage_and_length_prefixes_alone_are_not_answers() {
        let mut query = Message::new();
        query.add_query(Query::query(
            Name::from_ascii("a.test.").unwrap(),
            RecordType::A,
        ));
        assert!(parse(&query.to_vec().unwrap(), false).is_none());
        assert!(parse(&[0, 40], true).is_none());
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).is_none());
        assert!(parse(&[0xff; 600], false).is_none());
    }
}
