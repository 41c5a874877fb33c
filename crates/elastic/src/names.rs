//! Names: of the snapshots lifeboat takes, of the indices a pattern
//! matches, and of indices renamed by a restore as the cluster renames them.

use lifeboat_repo::Timestamp;

use crate::error::{ElasticError, Result};

/// The prefix of every snapshot lifeboat takes.
pub const PREFIX: &str = "lifeboat-";

/// `lifeboat-<source>-<UTC time>` (`lifeboat-logs-2026.11.28-02.00.05`):
/// lower case, with what snapshot names may not hold (`\ / * ? " < > | , #`,
/// spaces, upper case) replaced by `-`.
pub fn snapshot_name(source: &str, at: Timestamp) -> String {
    let src: String = source
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let src = src.trim_matches(|c| c == '-' || c == '_' || c == '.');
    let src = if src.is_empty() { "source" } else { src };
    format!("{PREFIX}{src}-{}", at.strftime("%Y.%m.%d-%H.%M.%S"))
}

/// The prefix of the snapshots of source `source`: `lifeboat-<source>-`.
pub fn source_prefix(source: &str) -> String {
    let at: Timestamp = Timestamp::UNIX_EPOCH;
    let full = snapshot_name(source, at);
    full[..full.len() - "1970.01.01-00.00.00".len()].to_string()
}

/// Whether `name` matches the cluster-style pattern `pattern` (`*` for any
/// run of characters; no other wildcard).
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The names of `indices` that comma-separated `patterns` select, in order:
/// every one when there is no pattern; a pattern starting with `-` takes
/// away what it matches, as the cluster reads patterns.
pub fn select(indices: &[String], patterns: &[String]) -> Vec<String> {
    let parts: Vec<&str> = patterns
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return indices.to_vec();
    }
    indices
        .iter()
        .filter(|i| {
            let mut chosen = false;
            for p in &parts {
                match p.strip_prefix('-') {
                    Some(neg) if chosen => chosen = !glob(neg, i),
                    Some(_) => {}
                    None => chosen |= glob(p, i),
                }
            }
            chosen
        })
        .cloned()
        .collect()
}

/// How a restore renames indices: the cluster's `rename_pattern` (a regular
/// expression, replaced everywhere it matches) and `rename_replacement`
/// (`$1` for a group).
#[derive(Clone, Debug)]
pub struct Rename {
    re: regex::Regex,
    replacement: String,
}

impl Rename {
    /// The rename of `pattern` → `replacement`, or a usage error naming a
    /// pattern that does not compile.
    pub fn new(pattern: &str, replacement: &str) -> Result<Rename> {
        let re = regex::Regex::new(pattern).map_err(|e| {
            ElasticError::Refused(format!(
                "--rename-pattern {pattern:?} is not a regular expression: {e}"
            ))
        })?;
        // Java's `$1x` is group 1 then `x`; the regex crate's is the group
        // named `1x`: braces make the Java meaning explicit.
        let mut out = String::new();
        let mut chars = replacement.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                out.push_str(&format!("${{{digits}}}"));
            } else if c == '\\' {
                if let Some(n) = chars.next() {
                    if n == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(n);
                    }
                }
            } else {
                out.push(c);
            }
        }
        Ok(Rename {
            re,
            replacement: out,
        })
    }

    /// `name` renamed.
    pub fn apply(&self, name: &str) -> String {
        self.re
            .replace_all(name, self.replacement.as_str())
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn snapshot_names_are_lower_case_and_legal() {
        let t: Timestamp = "2026-11-28T02:00:05Z".parse().unwrap();
        assert_eq!(
            snapshot_name("Logs Prod", t),
            "lifeboat-logs-prod-2026.11.28-02.00.05"
        );
        assert_eq!(
            snapshot_name("a,b#c", t),
            "lifeboat-a-b-c-2026.11.28-02.00.05"
        );
        assert_eq!(snapshot_name("", t), "lifeboat-source-2026.11.28-02.00.05");
        assert_eq!(source_prefix("Logs Prod"), "lifeboat-logs-prod-");
        assert!(snapshot_name("logs", t).starts_with(&source_prefix("logs")));
        assert!(!snapshot_name("logs-2", t).starts_with(&source_prefix("logs-2x")));
    }

    #[test]
    fn patterns_select_as_the_cluster_does() {
        let idx: Vec<String> = ["logs-1", "logs-2", "metrics", "logs-old"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(select(&idx, &[]), idx);
        assert_eq!(
            select(&idx, &["logs-*".into()]),
            ["logs-1", "logs-2", "logs-old"]
        );
        assert_eq!(
            select(&idx, &["logs-*,-logs-old".into()]),
            ["logs-1", "logs-2"]
        );
        assert_eq!(
            select(&idx, &["metrics".into(), "logs-2".into()]),
            ["logs-2", "metrics"]
        );
        assert!(select(&idx, &["nope".into()]).is_empty());
    }

    #[test]
    fn renames_read_java_group_references() {
        let r = Rename::new("(.+)", "restored_$1").unwrap();
        assert_eq!(r.apply("logs-1"), "restored_logs-1");
        let r = Rename::new("logs-(\\d+)", "old-$1x").unwrap();
        assert_eq!(r.apply("logs-7"), "old-7x");
        assert!(Rename::new("(", "x").is_err());
    }

    proptest! {
        #[test]
        fn glob_without_star_is_equality(a in "[a-z.-]{0,8}", b in "[a-z.-]{0,8}") {
            prop_assert_eq!(glob(&a, &b), a == b);
        }

        #[test]
        fn a_star_matches_any_middle(pre in "[a-z]{0,4}", mid in "[a-z*]{0,6}", suf in "[a-z]{0,4}") {
            let name = format!("{pre}{}{suf}", mid.replace('*', ""));
            let pattern = format!("{pre}*{suf}");
            prop_assert!(glob(&pattern, &name));
        }
    }
}
