//! The erasure ledger re-applied to a restored server: a source's
//! `erase_sql` (one or more statements taking the subject as `$1`) run
//! once per subject, each subject in a transaction of its own.
//!
//! The subject is sent as text and typed by the server (`$1` compared with
//! an integer column is read as an integer), so the same ledger serves any
//! key type; it is a parameter, never spliced into the SQL.

use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

use crate::session::{error_text, Session};
use crate::{PgError, Result};

/// What re-applying the ledger did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Subjects the statements ran for.
    pub subjects: usize,
    /// Rows the statements changed (deleted or anonymised), all told.
    pub rows: u64,
}

/// A subject id sent in text format, whatever type the server gives `$1`.
#[derive(Debug)]
struct Text<'a>(&'a str);

impl ToSql for Text<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Splits `sql` into statements at the semicolons outside quotes
/// (`'...'`, `"..."`) and comments; empty ones are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    // A comment to the end of the line.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => out.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            },
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Runs `statements` for every subject of `subjects` on the server `cfg`
/// names, one transaction per subject; a statement that fails stops it
/// with an error naming the statement and the subject's place in the
/// ledger (never the subject itself: it is personal data).
pub fn apply(
    rt: &Handle,
    cfg: &tokio_postgres::Config,
    statements: &[String],
    subjects: &[String],
) -> Result<Erased> {
    let mut erased = Erased::default();
    if subjects.is_empty() {
        return Ok(erased);
    }
    let mut session = Session::connect_with(rt, cfg)?;
    let client = session.client_mut();
    let mut prepared = Vec::with_capacity(statements.len());
    for sql in statements {
        let st = rt
            .block_on(client.prepare(sql))
            .map_err(|e| PgError::Query {
                what: format!("prepare erase_sql {sql:?}"),
                reason: error_text(&e),
            })?;
        if st.params().len() > 1 {
            return Err(PgError::Refused(format!(
                "erase_sql {sql:?} takes {} parameters; it may use $1 (the subject) only",
                st.params().len()
            )));
        }
        prepared.push((sql, st));
    }
    for (n, subject) in subjects.iter().enumerate() {
        let tx = rt
            .block_on(client.transaction())
            .map_err(|e| PgError::Query {
                what: "begin the erasure's transaction".into(),
                reason: error_text(&e),
            })?;
        for (sql, st) in &prepared {
            let text = Text(subject);
            let params: Vec<&(dyn ToSql + Sync)> = if st.params().is_empty() {
                Vec::new()
            } else {
                vec![&text]
            };
            let rows = rt
                .block_on(tx.execute(st, &params))
                .map_err(|e| PgError::Query {
                    what: format!("erase_sql {sql:?} for the ledger's subject #{}", n + 1),
                    reason: without_subject(&error_text(&e), subject),
                })?;
            erased.rows += rows;
        }
        rt.block_on(tx.commit()).map_err(|e| PgError::Query {
            what: format!("commit the erasure of the ledger's subject #{}", n + 1),
            reason: without_subject(&error_text(&e), subject),
        })?;
        erased.subjects += 1;
    }
    Ok(erased)
}

/// `text` (a server's error, which may quote the value it was given:
/// `invalid input syntax for type integer: "alice"`, `Key (id)=(4711)`)
/// with the subject replaced by `***`: it is personal data, and errors go
/// to the audit log, drill records and terminals.
fn without_subject(text: &str, subject: &str) -> String {
    if subject.is_empty() {
        return text.to_string();
    }
    let mut out = text.to_string();
    for quoted in [
        format!("\"{subject}\""),
        format!("'{subject}'"),
        format!("({subject})"),
        format!("={subject}"),
    ] {
        let masked = quoted.replace(subject, "***");
        out = out.replace(&quoted, &masked);
    }
    if subject.chars().count() >= 4 {
        out = out.replace(subject, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split_statements(
                "DELETE FROM orders WHERE user_id = $1; -- the orders; then\n\
                 UPDATE users SET name = 'gone; really' WHERE id = $1;;"
            ),
            [
                "DELETE FROM orders WHERE user_id = $1",
                "UPDATE users SET name = 'gone; really' WHERE id = $1"
            ]
        );
        assert_eq!(split_statements(" ; "), Vec::<String>::new());
    }

    #[test]
    fn the_subject_never_reaches_an_error_message() {
        let e = "invalid input syntax for type integer: \"alice@example.com\"";
        assert!(!without_subject(e, "alice@example.com").contains("alice"));
        let e = "DETAIL: Key (id)=(42) is still referenced from table \"orders\"";
        let got = without_subject(e, "42");
        assert!(!got.contains("(42)") && got.contains("orders"), "{got}");
    }

    proptest! {
        #[test]
        fn splitting_never_panics_and_keeps_every_statement_whole(parts in proptest::collection::vec("[a-z $=1']{0,20}", 0..6)) {
            let sql = parts.join(";");
            let out = split_statements(&sql);
            prop_assert!(out.iter().all(|s| !s.is_empty()));
        }
    }
}
