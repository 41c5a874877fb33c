//! Item names in snapshots: Linux file names are bytes, snapshots are JSON
//! text, so a name is stored as text that spells its bytes exactly.
//!
//! The spelling (snapshot version 3 and later): every byte sequence that is
//! valid UTF-8 stands for itself, except the backslash, written `\\`; every
//! byte that is not part of valid UTF-8 is written `\xHH` (two lowercase hex
//! digits). [`encode`] and [`decode`] are exact inverses, so two different
//! names never share a spelling, and a name that is valid UTF-8 without a
//! backslash (nearly all of them) is spelled as itself.
//!
//! [`display`] goes one step further for terminals: control characters are
//! shown as `\xHH` (or `\u{…}` for the C1 range) so a name holding a newline
//! or an escape sequence cannot forge a line of a listing.

use std::fmt::Write as _;

/// A spelling that is not one [`encode`] makes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item name {text:?} is not a valid spelling: {reason}")]
pub struct NameError {
    text: String,
    reason: &'static str,
}

/// The text that spells `bytes` (see the module documentation).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_escaping_backslashes(&mut out, valid);
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // The prefix was just checked to be UTF-8.
                push_escaping_backslashes(&mut out, std::str::from_utf8(valid).unwrap_or(""));
                let bad = e.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                rest = &after[bad..];
            }
        }
    }
}

fn push_escaping_backslashes(out: &mut String, s: &str) {
    if !s.contains('\\') {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
}

/// The bytes `text` spells; an error for text [`encode`] never makes.
pub fn decode(text: &str) -> Result<Vec<u8>, NameError> {
    if !text.contains('\\') {
        return Ok(text.as_bytes().to_vec());
    }
    let err = |reason| NameError {
        text: text.to_string(),
        reason,
    };
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = bytes
                    .get(i + 2..i + 4)
                    .ok_or_else(|| err("a \\x escape needs two hex digits"))?;
                let v = std::str::from_utf8(hex)
                    .ok()
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| err("a \\x escape needs two hex digits"))?;
                if v < 0x80 {
                    // encode() writes ASCII as itself: this is not its spelling.
                    return Err(err("a \\x escape of an ASCII byte"));
                }
                out.push(v);
                i += 4;
            }
            _ => return Err(err("a backslash that is neither \\\\ nor \\xHH")),
        }
    }
    // Escaped bytes must be ones that are not valid UTF-8 where they stand,
    // or the spelling is not encode()'s and two spellings would name one file.
    if encode(&out) != text {
        return Err(err("an escaped byte that is part of valid UTF-8"));
    }
    Ok(out)
}

/// Upgrades a name from a snapshot older than version 3, where names were
/// plain text (always valid UTF-8): its backslashes become `\\`.
pub fn from_plain(text: &str) -> String {
    encode(text.as_bytes())
}

/// A name as a terminal should show it: the spelling, with control
/// characters escaped too.
pub fn display(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{0}'..='\u{1f}' | '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{80}'..='\u{9f}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_spell_themselves() {
        assert_eq!(encode(b"srv/data/a.txt"), "srv/data/a.txt");
        assert_eq!(encode("ünïcödé/日本".as_bytes()), "ünïcödé/日本");
        assert_eq!(decode("srv/data/a.txt").unwrap(), b"srv/data/a.txt");
    }

    #[test]
    fn backslashes_and_invalid_bytes_are_escaped() {
        assert_eq!(encode(b"a\\b"), "a\\\\b");
        assert_eq!(encode(b"caf\xe9\n"), "caf\\xe9\n");
        assert_eq!(encode(b"\xff\xfe"), "\\xff\\xfe");
        // A literal "\xff" (four characters) and the byte 0xff differ.
        assert_ne!(encode(b"\\xff"), encode(b"\xff"));
        assert_eq!(decode("caf\\xe9\n").unwrap(), b"caf\xe9\n");
    }

    #[test]
    fn spellings_encode_never_makes_are_refused() {
        for bad in ["a\\", "a\\n", "a\\x4", "\\x41", "\\xzz", "\\xc3\\xa9"] {
            assert!(decode(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn display_escapes_control_characters() {
        assert_eq!(display("a\nb\u{1b}[2J"), "a\\x0ab\\x1b[2J");
        assert_eq!(display("x\u{85}y"), "x\\u{85}y");
        assert_eq!(display("caf\\xe9"), "caf\\xe9");
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = encode(&bytes);
            prop_assert_eq!(decode(&text).unwrap(), bytes);
        }

        #[test]
        fn distinct_names_have_distinct_spellings(
            a in proptest::collection::vec(any::<u8>(), 0..20),
            b in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "(\\PC|[\\\\xaf09é]){0,60}") {
            if let Ok(bytes) = decode(&text) {
                prop_assert_eq!(encode(&bytes), text.clone());
            }
            let _ = display(&text);
        }
    }
}
