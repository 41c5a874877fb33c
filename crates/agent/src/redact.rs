//! Secrets out of text shown to people: job error messages can quote a
//! connection string.

/// `text` with the password of every `scheme://user:password@` URL and of
/// every `password=...` conninfo pair replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // URLs: scheme://user:PASSWORD@host
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon + 1]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    // conninfo: password=VALUE, password = VALUE or password='VALUE'
    // (libpq allows spaces around `=`).
    for spaced in ["password =", "password= ", "password = "] {
        while let Some(i) = out.to_ascii_lowercase().find(spaced) {
            out.replace_range(i..i + spaced.len(), "password=");
        }
    }
    let mut result = String::with_capacity(out.len());
    let mut s = out.as_str();
    while let Some(i) = s.to_ascii_lowercase().find("password=") {
        let (head, tail) = s.split_at(i + "password=".len());
        result.push_str(head);
        result.push_str("***");
        let end = if let Some(q) = tail.strip_prefix('\'') {
            q.find('\'').map_or(tail.len(), |e| e + 2)
        } else {
            tail.find(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == ';')
                .unwrap_or(tail.len())
        };
        s = &tail[end..];
    }
    result.push_str(s);
    result
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_in_urls_and_conninfo_are_hidden() {
        assert_eq!(
            redact("cannot connect to postgresql://app:s3cret@db:5432/x: refused"),
            "cannot connect to postgresql://app:***@db:5432/x: refused"
        );
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6379 down"),
            "redis://:***@127.0.0.1:6379 down"
        );
        assert_eq!(
            redact("host=db password='a b' user=x"),
            "host=db password=*** user=x"
        );
        assert_eq!(redact("user=x PASSWORD=hunter2"), "user=x PASSWORD=***");
        assert_eq!(
            redact("host=db password = s3cret user=x"),
            "host=db password=*** user=x"
        );
        assert_eq!(redact("password ='a b' x"), "password=*** x");
        assert_eq!(redact("http://host:9000/path"), "http://host:9000/path");
        assert_eq!(redact("no secrets here"), "no secrets here");
    }
}
