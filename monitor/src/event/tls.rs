//! The server name (SNI) a TLS client asks for, read from the first bytes of its ClientHello as
//! the kernel copied them (at most `TLS_HELLO_MAX`). Only the clear-text hello is parsed; a
//! malformed or cut one yields no name. Bounded: every length is checked against the bytes
//! there.

/// The `server_name` extension's host name (RFC 6066: name type 0), lowercase, when the record
/// is a ClientHello that names one within the bytes copied and the name is a plain host name.
pub fn server_name(record: &[u8]) -> Option<String> {
    let mut r = Reader {
        bytes: record,
        at: 0,
    };
    // TLS record header: type 22 (handshake), version 3.x, length.
    if r.u8()? != 22 || r.u8()? != 3 {
        return None;
    }
    r.skip(3)?; // minor version, record length
                // Handshake header: type 1 (ClientHello), 3-byte length.
    if r.u8()? != 1 {
        return None;
    }
    r.skip(3)?;
    r.skip(2 + 32)?; // client version, random
    let session = r.u8()? as usize;
    r.skip(session)?;
    let suites = r.u16()? as usize;
    r.skip(suites)?;
    let compression = r.u8()? as usize;
    r.skip(compression)?;
    let extensions_end = r.at + r.u16()? as usize;
    while r.at + 4 <= extensions_end.min(record.len()) {
        let kind = r.u16()?;
        let len = r.u16()? as usize;
        if kind != 0 {
            r.skip(len)?;
            continue;
        }
        // server_name_list: length, then entries (type, length, name).
        let list_end = r.at + r.u16()? as usize;
        while r.at + 3 <= list_end {
            let name_type = r.u8()?;
            let name_len = r.u16()? as usize;
            let name = r.take(name_len)?;
            if name_type == 0 {
                return host_name(name);
            }
        }
        return None;
    }
    None
}

/// A DNS host name as SNI carries it (ASCII letters, digits, `-`, `_`, dots; at most 253).
fn host_name(bytes: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(bytes).ok()?.trim_end_matches('.');
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    plain.then(|| name.to_ascii_lowercase())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// A ClientHello as clients write it: some extension first, then server_name (tests).
#[cfg(test)]
pub(crate) fn client_hello(name: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    // A supported_groups extension before the name (clients order them freely).
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
    let n = name.as_bytes();
    let entry_len = 3 + n.len();
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(entry_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
    ext.extend_from_slice(n);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(32);
    body.extend_from_slice(&[9u8; 32]);
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0, 0, 0];
    hs[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_read_from_a_client_hello() {
        assert_eq!(
            server_name(&client_hello("Registry.NPMjs.org")).as_deref(),
            Some("registry.npmjs.org")
        );
    }

    #[test]
    fn cut_malformed_and_nameless_hellos_yield_nothing() {
        let hello = client_hello("evil.example");
        for cut in [0, 5, 40, 90, hello.len() - 3] {
            assert_eq!(server_name(&hello[..cut]), None, "cut at {cut}");
        }
        let mut not_hello = hello.clone();
        not_hello[5] = 2; // ServerHello
        assert_eq!(server_name(&not_hello), None);
        assert_eq!(server_name(&client_hello("bad name\u{7f}")), None);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), None);
    }
}
