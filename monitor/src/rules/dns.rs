//! What DNS answers tell the engine: which name each address was resolved from (per job, with
//! TTLs), and whether the questions themselves carry data out (DNS exfiltration).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use crate::event::dns::DnsRecord;

/// An answer is kept past its TTL for this long: clients and their caches reuse addresses (a
/// connection pool reconnecting, a resolver library caching for its own minimum).
pub const NAME_GRACE_NS: u64 = 300 * 1_000_000_000;
/// Addresses remembered per job; the oldest-expiring are dropped first past it.
pub const MAX_ADDRESSES_PER_JOB: usize = 16_384;
/// Names remembered per address.
const MAX_NAMES_PER_ADDRESS: usize = 8;

/// A label at least this long carries data, whatever it looks like.
pub const EXFIL_LONG_LABEL: usize = 52;
/// A label at least this long looks encoded when it is all hex digits, or when it has no hyphen,
/// some digits and high entropy (base32/base64 of anything sits above 4 bits per character;
/// hex of text only near 3.3, hence its own test; names made of words have hyphens or no digits).
pub const EXFIL_ENCODED_LABEL: usize = 24;
pub const EXFIL_ENTROPY_BITS: f64 = 4.0;
const EXFIL_MIN_DIGIT_SHARE: f64 = 0.1;
/// Left of the registrable domain, this many characters (dots not counted) carry data however
/// they are split into labels: names made of words are far shorter.
pub const EXFIL_LONG_NAME: usize = 80;
/// Distinct names asked under one registrable domain in a job before it looks like a tunnel.
pub const EXFIL_UNIQUE_NAMES: usize = 64;
/// Characters left of the registrable domain, over the distinct names asked under it in a job,
/// before it looks like a tunnel (fewer, longer names carry as much as many short ones).
pub const EXFIL_ZONE_BYTES: usize = 2048;
/// Registrable domains tracked per job for the unique-name count.
const MAX_ZONES_PER_JOB: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedName {
    /// The name the process asked for.
    pub asked: String,
    /// CNAMEs followed from it, in order.
    pub chain: Vec<String>,
    expires_ns: u64,
}

impl ResolvedName {
    /// The asked name, then the chain.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.asked.as_str()).chain(self.chain.iter().map(String::as_str))
    }
}

/// A job's address-to-name map and its per-zone question counts.
#[derive(Debug, Default)]
pub struct JobNames {
    by_address: HashMap<IpAddr, Vec<ResolvedName>>,
    zones: HashMap<String, ZoneQuestions>,
}

/// The distinct names asked under one zone, and how many characters they carry left of it.
#[derive(Debug, Default)]
struct ZoneQuestions {
    names: HashSet<String>,
    bytes: usize,
    reported: bool,
}

/// A zone that passed a tunnel bound: its name, distinct names and their characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelZone {
    pub zone: String,
    pub unique_names: usize,
    pub bytes: usize,
}

impl JobNames {
    /// Learns the addresses an answer gives, each under the name that was asked.
    pub fn learn(&mut self, question: Option<&str>, records: &[DnsRecord], now_ns: u64) {
        for record in records.iter().filter(|r| r.kind == "A" || r.kind == "AAAA") {
            let Ok(address) = record.data.parse::<IpAddr>() else {
                continue;
            };
            let asked = question.unwrap_or(&record.name).to_string();
            let chain = cname_chain(&asked, records);
            let expires_ns = now_ns
                .saturating_add(u64::from(record.ttl) * 1_000_000_000)
                .saturating_add(NAME_GRACE_NS);
            if self.by_address.len() >= MAX_ADDRESSES_PER_JOB
                && !self.by_address.contains_key(&address)
            {
                self.forget_expired(now_ns);
                if self.by_address.len() >= MAX_ADDRESSES_PER_JOB {
                    continue;
                }
            }
            let names = self.by_address.entry(address.to_canonical()).or_default();
            names.retain(|n| n.asked != asked);
            if names.len() >= MAX_NAMES_PER_ADDRESS {
                names.remove(0);
            }
            names.push(ResolvedName {
                asked,
                chain,
                expires_ns,
            });
        }
    }

    fn forget_expired(&mut self, now_ns: u64) {
        self.by_address.retain(|_, names| {
            names.retain(|n| n.expires_ns > now_ns);
            !names.is_empty()
        });
    }

    /// The names `address` was resolved from during the job and still valid, newest first.
    pub fn names_of(&self, address: IpAddr, now_ns: u64) -> Vec<&ResolvedName> {
        self.by_address
            .get(&address.to_canonical())
            .map(|names| {
                names
                    .iter()
                    .rev()
                    .filter(|n| n.expires_ns > now_ns)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Counts a question under its registrable domain; the zone, once, when it first passes
    /// `EXFIL_UNIQUE_NAMES` distinct names or `EXFIL_ZONE_BYTES` characters left of it.
    pub fn count_question(&mut self, name: &str) -> Option<TunnelZone> {
        if is_reverse_lookup(name) {
            return None;
        }
        let zone = registrable_domain(name)?;
        if !self.zones.contains_key(&zone) && self.zones.len() >= MAX_ZONES_PER_JOB {
            return None;
        }
        let questions = self.zones.entry(zone.clone()).or_default();
        if questions.reported {
            return None; // already reported; stop growing
        }
        if questions.names.insert(name.to_string()) {
            questions.bytes += name.len().saturating_sub(zone.len() + 1);
        }
        let over = questions.names.len() > EXFIL_UNIQUE_NAMES || questions.bytes > EXFIL_ZONE_BYTES;
        if !over {
            return None;
        }
        questions.reported = true;
        let found = TunnelZone {
            zone,
            unique_names: questions.names.len(),
            bytes: questions.bytes,
        };
        questions.names = HashSet::new();
        Some(found)
    }
}

/// The CNAMEs followed from `asked` through `records`.
fn cname_chain(asked: &str, records: &[DnsRecord]) -> Vec<String> {
    let mut chain = Vec::new();
    let mut current = asked.to_string();
    for _ in 0..records.len().min(16) {
        let Some(next) = records
            .iter()
            .find(|r| r.kind == "CNAME" && r.name == current)
            .map(|r| r.data.clone())
        else {
            break;
        };
        chain.push(next.clone());
        current = next;
    }
    chain
}

/// `a.b.example.co.uk` -> `example.co.uk` (public suffix list); `None` for bare suffixes.
pub fn registrable_domain(name: &str) -> Option<String> {
    let domain = psl::domain(name.as_bytes())?;
    std::str::from_utf8(domain.as_bytes())
        .ok()
        .map(str::to_string)
}

/// Reverse lookups (`4.3.2.1.in-addr.arpa`, the 32 nibbles of `ip6.arpa`): made of digits and
/// hex by design, and asked for every address a tool prints by name.
fn is_reverse_lookup(name: &str) -> bool {
    name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa")
}

/// Shannon entropy of `label`, in bits per character.
pub fn entropy(label: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in label.bytes() {
        counts[b as usize] += 1;
    }
    let n = label.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether `text` (a label, or labels joined) looks encoded: all hex, or without hyphens, with
/// some digits and high entropy.
fn looks_encoded(text: &str) -> bool {
    let n = text.len();
    if n < EXFIL_ENCODED_LABEL {
        return false;
    }
    let hex = text.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = text.bytes().filter(u8::is_ascii_digit).count() as f64 / n as f64;
    hex || (!text.contains('-')
        && digits >= EXFIL_MIN_DIGIT_SHARE
        && entropy(text) >= EXFIL_ENTROPY_BITS)
}

/// The label of `name` that looks like it carries data, if any.
pub fn data_carrying_label(name: &str) -> Option<&str> {
    name.split('.')
        .find(|label| label.len() >= EXFIL_LONG_LABEL || looks_encoded(label))
}

/// The part of a name that carries data: one label, or everything left of the registrable
/// domain judged as one string (data split over several short labels passes a label check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPart {
    /// The characters (labels joined without their dots).
    pub text: String,
    /// How many labels they were spread over.
    pub labels: usize,
}

pub fn data_carrying_part(name: &str) -> Option<DataPart> {
    if is_reverse_lookup(name) {
        return None;
    }
    if let Some(label) = data_carrying_label(name) {
        return Some(DataPart {
            text: label.to_string(),
            labels: 1,
        });
    }
    let zone = registrable_domain(name)?;
    let sub = name.strip_suffix(zone.as_str())?.strip_suffix('.')?;
    let labels: Vec<&str> = sub.split('.').filter(|l| !l.is_empty()).collect();
    if labels.len() < 2 {
        return None;
    }
    let joined = labels.concat();
    (joined.len() >= EXFIL_LONG_NAME || looks_encoded(&joined)).then(|| DataPart {
        text: joined,
        labels: labels.len(),
    })
}

/// A name safe to write down: what carries data is cut (it may be an encoded secret): a label,
/// or everything left of the registrable domain when the data is spread over several labels.
pub fn redact_name(name: &str) -> String {
    let cut = |text: &str, labels: usize| {
        let head: String = text.chars().take(8).collect();
        if labels > 1 {
            format!("{head}…({} chars in {labels} labels)", text.len())
        } else {
            format!("{head}…({} chars)", text.len())
        }
    };
    if data_carrying_label(name).is_none() {
        if let Some(part) = data_carrying_part(name) {
            if let Some(zone) = registrable_domain(name) {
                return format!("{}.{zone}", cut(&part.text, part.labels));
            }
        }
    }
    name.split('.')
        .map(|label| {
            if data_carrying_label(label).is_some() {
                cut(label, 1)
            } else {
                label.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, kind: &str, data: &str, ttl: u32) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            kind: kind.into(),
            data: data.into(),
            ttl,
        }
    }

    #[test]
    fn addresses_map_to_the_asked_name_with_the_cname_chain_until_they_expire() {
        let mut names = JobNames::default();
        names.learn(
            Some("registry.npmjs.org"),
            &[
                rec(
                    "registry.npmjs.org",
                    "CNAME",
                    "registry.npmjs.org.cdn.cloudflare.net",
                    300,
                ),
                rec(
                    "registry.npmjs.org.cdn.cloudflare.net",
                    "A",
                    "104.16.1.1",
                    60,
                ),
                rec(
                    "registry.npmjs.org.cdn.cloudflare.net",
                    "AAAA",
                    "2606:4700::6810:101",
                    60,
                ),
            ],
            0,
        );
        let v4 = names.names_of("104.16.1.1".parse().unwrap(), 1);
        assert_eq!(v4[0].asked, "registry.npmjs.org");
        assert_eq!(v4[0].chain, vec!["registry.npmjs.org.cdn.cloudflare.net"]);
        assert_eq!(
            names
                .names_of("2606:4700::6810:101".parse().unwrap(), 1)
                .len(),
            1
        );
        // An IPv4-mapped IPv6 destination is the IPv4 address.
        assert_eq!(
            names
                .names_of("::ffff:104.16.1.1".parse().unwrap(), 1)
                .len(),
            1
        );
        let after = 60 * 1_000_000_000 + NAME_GRACE_NS + 1;
        assert!(names
            .names_of("104.16.1.1".parse().unwrap(), after)
            .is_empty());
    }

    #[test]
    fn data_carrying_questions_are_recognised_and_ordinary_ones_are_not() {
        for ordinary in [
            "registry.npmjs.org",
            "objects.githubusercontent.com",
            "d1a2b3c4d5e6f7.cloudfront.net",
            "files.pythonhosted.org",
            "ip-10-0-0-1.ec2.internal",
            "company-artifacts-prod-us-east-1.s3.amazonaws.com",
            "companyartifactsprodeuwest.blob.core.windows.net",
        ] {
            assert!(data_carrying_label(ordinary).is_none(), "{ordinary}");
        }
        let hex = "6769746875625f7061745f31314141414141414141.x.evil.test";
        assert!(data_carrying_label(hex).is_some());
        let b32 = "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe.evil.test";
        assert!(data_carrying_label(b32).is_some());
        assert_eq!(
            redact_name(hex),
            "67697468…(42 chars).x.evil.test",
            "the data is not written down"
        );
        assert_eq!(
            registrable_domain("a.b.example.co.uk").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(
            registrable_domain("x.evil.test").as_deref(),
            Some("evil.test")
        );
    }

    #[test]
    fn many_unique_names_under_one_zone_are_counted_once() {
        let mut names = JobNames::default();
        let mut fired = Vec::new();
        for i in 0..200 {
            if let Some(z) = names.count_question(&format!("c{i}.tunnel.test")) {
                fired.push(z);
            }
            names.count_question("www.example.org");
        }
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].zone, "tunnel.test");
        assert_eq!(fired[0].unique_names, EXFIL_UNIQUE_NAMES + 1);
    }

    #[test]
    fn fewer_longer_names_under_one_zone_pass_the_byte_budget() {
        let mut names = JobNames::default();
        let mut fired = Vec::new();
        // 40 names of 60 characters each: under the name count, over the byte budget.
        for i in 0..40 {
            let name = format!("{i:02}{}.x.evil.test", "a".repeat(56));
            fired.extend(names.count_question(&name));
        }
        assert_eq!(fired.len(), 1);
        assert!(fired[0].bytes > EXFIL_ZONE_BYTES);
        assert!(fired[0].unique_names < EXFIL_UNIQUE_NAMES);
    }

    #[test]
    fn data_split_over_short_labels_is_judged_as_one_string() {
        // 48 hex characters in four labels of 12: no label is long or encoded enough alone.
        let split = "676974687562.5f7061745f31.314141414141.414141414141.evil.test";
        assert!(data_carrying_label(split).is_none());
        let part = data_carrying_part(split).unwrap();
        assert_eq!(part.labels, 4);
        assert_eq!(part.text.len(), 48);
        assert_eq!(
            redact_name(split),
            "67697468…(48 chars in 4 labels).evil.test",
            "the data is not written down"
        );
        // base32 in short labels.
        let b32 = "mfrggzdfmz.twq2lknnwg.23tpobyxe4.3uov3ho6dz.evil.test";
        assert!(data_carrying_part(b32).is_some());
        // Ordinary names with several labels stay quiet.
        for ordinary in [
            "api.eu-west-1.prod.k8s.internal.example.com",
            "ec2-54-123-45-67.compute-1.amazonaws.com",
            "my-bucket.s3.us-east-1.amazonaws.com",
            "pkg-containers.githubusercontent.com",
            "production.cloudflare.docker.com",
            "e1234.dscb.akamaiedge.net",
            "www.googleapis.com",
            "_https._tcp.deb.debian.org",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa",
            "34.216.184.93.in-addr.arpa",
        ] {
            assert!(data_carrying_part(ordinary).is_none(), "{ordinary}");
        }
    }
}
