//! Just enough of RFC 5322 and MIME to read back what the mailer sent: unfolded headers,
//! RFC 2047 encoded words, multipart bodies, quoted-printable and base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A message or one part of a multipart body.
#[derive(Debug)]
pub struct Part {
    headers: Vec<(String, String)>,
    /// The body as transmitted (still transfer-encoded).
    raw_body: String,
}

impl Part {
    pub fn parse(raw: &str) -> Self {
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no blank line after the headers: {raw:?}"));
        // Unfolding: a line break followed by white space continues the header.
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", "\t");
        let headers = unfolded
            .split("\r\n")
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("not a header: {line:?}"));
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        Self {
            headers,
            raw_body: body.to_owned(),
        }
    }

    /// Every value of the header, as transmitted.
    pub fn raw_headers(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of the header, encoded words decoded.
    pub fn header(&self, name: &str) -> String {
        match self.raw_headers(name).as_slice() {
            [value] => decode_words(value),
            values => panic!("{name}: expected one value, found {values:?}"),
        }
    }

    /// `Content-Type` without its parameters, in lower case.
    pub fn mime_type(&self) -> String {
        let value = self.header("Content-Type");
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// A parameter of `Content-Type` (`charset`, `boundary`), unquoted.
    pub fn content_type_parameter(&self, name: &str) -> Option<String> {
        let value = self.header("Content-Type");
        value.split(';').skip(1).find_map(|parameter| {
            let (key, value) = parameter.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().trim_matches('"').to_owned())
        })
    }

    /// The body, transfer encoding undone, with LF line ends.
    pub fn text(&self) -> String {
        let encoding = self
            .raw_headers("Content-Transfer-Encoding")
            .first()
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_else(|| "7bit".to_owned());
        let bytes = match encoding.as_str() {
            "7bit" | "8bit" => self.raw_body.clone().into_bytes(),
            "quoted-printable" => quoted_printable(&self.raw_body),
            "base64" => {
                let compact: String = self
                    .raw_body
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                STANDARD.decode(compact).unwrap()
            }
            other => panic!("unexpected transfer encoding {other}"),
        };
        String::from_utf8(bytes).unwrap().replace("\r\n", "\n")
    }

    /// The parts of a multipart body, in order.
    pub fn parts(&self) -> Vec<Part> {
        let boundary = self
            .content_type_parameter("boundary")
            .unwrap_or_else(|| panic!("not multipart: {:?}", self.headers));
        let delimiter = format!("--{boundary}");
        let mut sections = self.raw_body.split(delimiter.as_str());
        // Before the first delimiter: the preamble; after the last (`--`): the epilogue.
        let _preamble = sections.next();
        sections
            .take_while(|section| !section.starts_with("--"))
            .map(|section| {
                let section = section
                    .strip_prefix("\r\n")
                    .unwrap_or_else(|| panic!("no line break after a delimiter: {section:?}"));
                // The line break before the next delimiter belongs to the delimiter.
                Part::parse(section.strip_suffix("\r\n").unwrap_or(section))
            })
            .collect()
    }
}

fn quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3, // a soft line break
            b'=' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Decodes the RFC 2047 encoded words of a header value; white space between two encoded
/// words is dropped.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        let Some((charset, encoding, data, tail)) = encoded_word(candidate) else {
            out.push_str(before);
            out.push_str("=?");
            rest = &candidate[2..];
            after_word = false;
            continue;
        };
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        assert!(charset.eq_ignore_ascii_case("utf-8"), "charset {charset}");
        let bytes = match encoding.to_ascii_lowercase().as_str() {
            "b" => STANDARD.decode(data).unwrap(),
            "q" => quoted_printable(&data.replace('_', " ")),
            other => panic!("unknown encoding {other}"),
        };
        out.push_str(&String::from_utf8(bytes).unwrap());
        rest = tail;
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// `=?charset?encoding?data?=` at the start of `text`, and what follows it.
fn encoded_word(text: &str) -> Option<(&str, &str, &str, &str)> {
    let inner = text.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let (data, tail) = inner.split_once("?=")?;
    (!data.contains(' ')).then_some((charset, encoding, data, tail))
}

#[test]
fn reads_encoded_words_and_quoted_printable() {
    assert_eq!(
        decode_words("=?utf-8?b?Wm/Dqw==?= =?utf-8?q?_caf=C3=A9?= and plain"),
        "Zoë café and plain"
    );
    assert_eq!(quoted_printable("a=3Db=\r\nc"), b"a=bc");
}
