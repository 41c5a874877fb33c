//! Secrets: where a repository's passphrase or key material comes from, in
//! one order of precedence that every consumer shares — opening the
//! repository here, and the `restore_command` a restored PostgreSQL server
//! runs on its own.
//!
//! Key material comes before a passphrase (it opens without Argon2id). For
//! each, a flag (or its environment variable) comes before the config file,
//! and a file before a command before the plain environment variable
//! (`LIFEBOAT_KEY`, `LIFEBOAT_PASSWORD`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use lifeboat_repo::{Credential, SecretSource};

use crate::{Error, Result};

/// Key material must be at least this long (BLAKE3 slots need 32 bytes).
pub const KEY_MIN: usize = 32;

/// A passphrase shorter than this gets a warning when a slot is made for it.
pub const PASSPHRASE_ADVISED: usize = 12;

/// One way a secret is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// A file of key material.
    KeyFile(PathBuf),
    /// A command (a KMS or Vault client) that prints key material.
    KeyCommand(String),
    /// Key material in an environment variable (`LIFEBOAT_KEY`).
    KeyEnv(&'static str),
    /// A file whose first line is the passphrase.
    PasswordFile(PathBuf),
    /// A command whose first line of output is the passphrase.
    PasswordCommand(String),
    /// The passphrase in an environment variable (`LIFEBOAT_PASSWORD`).
    PasswordEnv(&'static str),
}

/// A secret as given, and whether the config file gave it (rather than a
/// flag or its environment variable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    /// How it is given.
    pub secret: SecretRef,
    /// True when it came from the config file.
    pub from_config: bool,
}

/// The secret settings of one side (flags, or the config file).
#[derive(Clone, Debug, Default)]
pub struct SecretSettings {
    /// `--key-file` / `key_file`.
    pub key_file: Option<PathBuf>,
    /// `--key-command` / `key_command`.
    pub key_command: Option<String>,
    /// `--password-file` / `password_file`.
    pub password_file: Option<PathBuf>,
    /// `--password-command` / `password_command`.
    pub password_command: Option<String>,
}

impl SecretSettings {
    /// True when any secret is set.
    pub fn any(&self) -> bool {
        self.key_file.is_some()
            || self.key_command.is_some()
            || self.password_file.is_some()
            || self.password_command.is_some()
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn pick<T: Clone>(
    flag: &Option<T>,
    file: &Option<T>,
    make: impl Fn(T) -> SecretRef,
) -> Option<Given> {
    match (flag, file) {
        (Some(v), _) => Some(Given {
            secret: make(v.clone()),
            from_config: false,
        }),
        (None, Some(v)) => Some(Given {
            secret: make(v.clone()),
            from_config: true,
        }),
        _ => None,
    }
}

/// The key material given, if any, by precedence; `env` names the
/// environment variable (`LIFEBOAT_KEY`, or `LIFEBOAT_NEW_KEY` for a new slot).
pub fn key_given(
    flags: &SecretSettings,
    file: &SecretSettings,
    env: &'static str,
) -> Option<Given> {
    pick(&flags.key_file, &file.key_file, SecretRef::KeyFile)
        .or_else(|| pick(&flags.key_command, &file.key_command, SecretRef::KeyCommand))
        .or_else(|| {
            env_set(env).then_some(Given {
                secret: SecretRef::KeyEnv(env),
                from_config: false,
            })
        })
}

/// The passphrase given, if any, by precedence; `env` as for [`key_given`].
pub fn password_given(
    flags: &SecretSettings,
    file: &SecretSettings,
    env: &'static str,
) -> Option<Given> {
    pick(
        &flags.password_file,
        &file.password_file,
        SecretRef::PasswordFile,
    )
    .or_else(|| {
        pick(
            &flags.password_command,
            &file.password_command,
            SecretRef::PasswordCommand,
        )
    })
    .or_else(|| {
        env_set(env).then_some(Given {
            secret: SecretRef::PasswordEnv(env),
            from_config: false,
        })
    })
}

/// The secret a restored PostgreSQL server's `restore_command` passes on:
/// the first given on the command line, files before commands (a file the
/// server's OS user can read works without the caller's environment; a
/// KMS or Vault client may not), key material before a passphrase. The
/// environment variables are not passed to the server, and the config
/// file carries its own; `None` when the command line gives neither a
/// file nor a command.
pub fn for_restore_command(flags: &SecretSettings) -> Option<SecretRef> {
    flags
        .key_file
        .clone()
        .map(SecretRef::KeyFile)
        .or_else(|| flags.password_file.clone().map(SecretRef::PasswordFile))
        .or_else(|| flags.key_command.clone().map(SecretRef::KeyCommand))
        .or_else(|| {
            flags
                .password_command
                .clone()
                .map(SecretRef::PasswordCommand)
        })
}

/// Reads (or runs) what `secret` names into a credential.
pub fn credential(secret: &SecretRef) -> Result<Credential> {
    Ok(match secret {
        SecretRef::KeyFile(p) => Credential::key_material(SecretSource::KeyFile, read_key_file(p)?),
        SecretRef::KeyCommand(c) => Credential::key_material(
            SecretSource::KeyCommand,
            key_material(run_secret_command(c, false)?, "the key command's output")?,
        ),
        SecretRef::KeyEnv(name) => Credential::key_material(
            SecretSource::KeyEnv,
            key_material(env_text(name).trim().as_bytes().to_vec(), name)?,
        ),
        SecretRef::PasswordFile(p) => Credential::passphrase(read_password_file(p)?),
        SecretRef::PasswordCommand(c) => Credential::passphrase(run_secret_command(c, true)?),
        SecretRef::PasswordEnv(name) => Credential::passphrase(env_text(name).into_bytes()),
    })
}

fn env_text(name: &str) -> String {
    std::env::var_os(name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every credential given, key material first, and warnings to show: key
/// material that cannot be a key is passed over (and said) when a
/// passphrase is given as well.
pub fn credentials(
    flags: &SecretSettings,
    file: &SecretSettings,
) -> Result<(Vec<Credential>, Vec<String>)> {
    let key = key_given(flags, file, "LIFEBOAT_KEY")
        .map(|g| credential(&g.secret))
        .transpose();
    let password = password_given(flags, file, "LIFEBOAT_PASSWORD")
        .map(|g| credential(&g.secret))
        .transpose()?;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    match key {
        Ok(Some(k)) => out.push(k),
        Ok(None) => {}
        Err(e) if password.is_some() => warnings.push(format!(
            "{}; trying the password",
            lifeboat_repo::report(&e)
        )),
        Err(e) => return Err(e),
    }
    out.extend(password);
    Ok((out, warnings))
}

/// The first line of a file holding one secret setting (a URL with a
/// password), or a usage error naming the file.
pub fn first_line_of(p: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| Error::usage_because(format!("cannot read {what} {}", p.display()), e))?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        return Err(Error::usage(format!("{what} {} is empty", p.display())));
    }
    Ok(line)
}

fn read_password_file(p: &Path) -> Result<Vec<u8>> {
    Ok(first_line_of(p, "password file")?.into_bytes())
}

/// Key material from `what`, refused when it is too short to be a key.
fn key_material(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if bytes.len() < KEY_MIN {
        return Err(Error::usage(format!(
            "{what} holds {} bytes of key material; a key must be at least {KEY_MIN} bytes (make one with `head -c 32 /dev/urandom | base64 > KEYFILE`), or use a passphrase (LIFEBOAT_PASSWORD, --password-file)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn read_key_file(p: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(p)
        .map_err(|e| Error::usage_because(format!("cannot read key file {}", p.display()), e))?;
    // A text key file (hex, base64) may end with a newline that is not part of the key.
    let bytes = match std::str::from_utf8(&bytes) {
        Ok(s) => s.trim_end().as_bytes().to_vec(),
        Err(_) => bytes,
    };
    key_material(bytes, &format!("key file {}", p.display()))
}

/// Runs a secret command (its standard error goes to ours, so its prompts
/// and complaints reach the operator) and returns what it printed: the
/// first line for a passphrase, everything but trailing white space for key
/// material.
fn run_secret_command(cmd: &str, first_line: bool) -> Result<Vec<u8>> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::usage_because(format!("cannot run secret command {cmd:?}"), e))?;
    if !out.status.success() {
        return Err(Error::usage(format!(
            "secret command {cmd:?} failed with {}",
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let secret = if first_line {
        text.lines().next().unwrap_or_default().to_string()
    } else {
        text.trim_end().to_string()
    };
    if secret.is_empty() {
        return Err(Error::usage(format!(
            "secret command {cmd:?} printed nothing"
        )));
    }
    Ok(secret.into_bytes())
}

/// A warning for a passphrase too short to resist offline guessing, when
/// `cred` is one.
pub fn short_passphrase_warning(cred: &Credential) -> Option<String> {
    let len = cred.len();
    (!cred.source().is_key_material() && len < PASSPHRASE_ADVISED).then(|| format!(
        "the passphrase is only {len} bytes long; anyone who gets a copy of the repository can try passphrases offline, so use at least {PASSPHRASE_ADVISED} characters (a few random words), or key material (--key-file)"
    ))
}

/// Quotes `s` for a POSIX shell: one word, whatever it holds.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_before_the_config_file_and_keys_before_passphrases() {
        let flags = SecretSettings {
            password_file: Some("/flag/pw".into()),
            ..Default::default()
        };
        let file = SecretSettings {
            key_command: Some("vault read".into()),
            password_file: Some("/file/pw".into()),
            ..Default::default()
        };
        let key = key_given(&flags, &file, "LIFEBOAT_TEST_UNSET_KEY").unwrap();
        assert_eq!(key.secret, SecretRef::KeyCommand("vault read".into()));
        assert!(key.from_config);
        let pw = password_given(&flags, &file, "LIFEBOAT_TEST_UNSET_PW").unwrap();
        assert_eq!(pw.secret, SecretRef::PasswordFile("/flag/pw".into()));
        assert!(!pw.from_config);
    }

    #[test]
    fn a_restored_server_gets_a_file_before_a_command_and_flags_only() {
        let flags = SecretSettings {
            key_command: Some("vault read key".into()),
            password_file: Some("/etc/pw".into()),
            password_command: Some("pass show x".into()),
            ..Default::default()
        };
        assert_eq!(
            for_restore_command(&flags),
            Some(SecretRef::PasswordFile("/etc/pw".into()))
        );
        let commands = SecretSettings {
            key_command: Some("vault read key".into()),
            password_command: Some("pass show x".into()),
            ..Default::default()
        };
        assert_eq!(
            for_restore_command(&commands),
            Some(SecretRef::KeyCommand("vault read key".into()))
        );
        assert_eq!(for_restore_command(&SecretSettings::default()), None);
    }

    #[test]
    fn shell_quoting_keeps_one_word() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
