//! Running PostgreSQL's programs: the client programs a dump streams
//! through (`pg_dump`, `pg_dumpall`, `pg_restore`, `psql`) and the server
//! programs run to their end (`pg_ctl`, `psql`, `pg_controldata`).
//!
//! A streamed program's standard error is read on a thread of its own
//! while the caller reads its standard output or writes its standard input,
//! so neither pipe can fill up and stall the other; when it exits non-zero
//! it fails with [`PgError::Tool`], in its own words. A server program's
//! output is collected whole and a failure is a [`PgError::Server`] naming
//! what was run.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use crate::error::{PgError, Result};

/// How a command is shown in messages: program and arguments.
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `cmd`, or says it could not be started.
fn spawn(cmd: &mut Command) -> Result<(Child, String)> {
    let command = shown(cmd);
    let child = cmd.spawn().map_err(|e| PgError::Tool {
        command: command.clone(),
        status: format!("could not start: {e}"),
        stderr: String::new(),
    })?;
    Ok((child, command))
}

/// Runs `cmd`, handing its standard output to `consume` as it arrives
/// (read in [`Gulps`]); fails with the program's own error output when it
/// exits non-zero.
pub(crate) fn run_streaming<T>(
    cmd: Command,
    consume: impl FnOnce(&mut (dyn Read + Send)) -> Result<T>,
) -> Result<T> {
    let (consumed, status, command, err_text) = run(cmd, |child| {
        let mut stdout = child.stdout.take().map(Gulps::new);
        let consumed = match stdout.as_mut() {
            Some(out) => consume(out),
            None => consume(&mut std::io::empty()),
        };
        // Whatever happened, read to the end so the program can exit.
        if let Some(out) = stdout.as_mut() {
            let _ = std::io::copy(out, &mut std::io::sink());
        }
        consumed
    })?;
    succeeded(status, command, &err_text)?;
    consumed
}

/// Runs `cmd`, `produce` writing its standard input; returns what `produce`
/// returned and what the program wrote to standard error, or fails with
/// that when it exits non-zero.
pub(crate) fn run_feeding<T>(
    mut cmd: Command,
    produce: impl FnOnce(&mut dyn std::io::Write) -> Result<T>,
) -> Result<(T, String)> {
    // What a fed program prints is not wanted; discarded, it cannot fill a
    // pipe nobody reads.
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let (produced, status, command, err_text) = run(cmd, |child| {
        // The pipe closes when it drops here: the program sees the end.
        match child.stdin.take() {
            Some(mut pipe) => produce(&mut pipe),
            None => produce(&mut std::io::sink()),
        }
    })?;
    // A producer that failed on its own (a damaged repository) is the
    // cause, whatever the program then said of its cut-off input; one that
    // failed because the program stopped reading is not.
    let produced = match produced {
        Err(e) if !e.is_broken_pipe() => return Err(e),
        other => other,
    };
    succeeded(status, command, &err_text)?;
    Ok((produced?, err_text))
}

/// Runs `cmd` with `input` on its standard input; returns what it wrote to
/// standard error, or fails with it when the program exits non-zero.
pub(crate) fn feed(cmd: Command, input: &[u8]) -> Result<String> {
    let (_, stderr) = run_feeding(cmd, |pipe| {
        // A program that stops reading early says why on standard error.
        let _ = pipe.write_all(input);
        Ok(())
    })?;
    Ok(stderr)
}

/// Runs `cmd` while `work` uses its standard input or output, reading its
/// standard error meanwhile on another thread (neither pipe can fill up and
/// stall the other); returns what `work` returned, the exit status, the
/// command as shown in messages and what the program wrote to standard
/// error.
fn run<T>(
    mut cmd: Command,
    work: impl FnOnce(&mut Child) -> T,
) -> Result<(T, ExitStatus, String, String)> {
    let (mut child, command) = spawn(&mut cmd)?;
    let stderr = child.stderr.take();
    let (done, err_text) = std::thread::scope(|s| {
        let err = s.spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        let done = work(&mut child);
        (done, err.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|e| PgError::Tool {
        command: command.clone(),
        status: format!("could not be waited for: {e}"),
        stderr: err_text.clone(),
    })?;
    Ok((done, status, command, err_text))
}

/// The program's failure, with what it said, when it exited non-zero.
fn succeeded(status: ExitStatus, command: String, stderr: &str) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    Err(PgError::Tool {
        command,
        status: status.to_string(),
        stderr: stderr.trim_end().to_string(),
    })
}

/// Runs a server program (`program` names it in messages) to its end and
/// collects what it printed; fails only when it cannot be run (see
/// [`checked`] for its exit status).
pub(crate) fn output(cmd: &mut Command, program: &str) -> Result<Output> {
    cmd.output()
        .map_err(|e| PgError::Server(format!("run {program}: {e}")))
}

/// What a server program printed on standard output, or, when it exited
/// non-zero, a failure of `what` with all it printed.
pub(crate) fn checked(out: Output, what: &str) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PgError::Server(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The pipe from a dump program is widened to this (Linux's default limit
/// for an unprivileged process).
const PIPE_SIZE: usize = 1 << 20;
/// A read of less than this from a widened pipe means the reader caught up
/// with the writer ...
const GULP: usize = PIPE_SIZE / 4;
/// ... and it waits this long before the next, so the pipe gathers more:
/// at most `PIPE_SIZE` per wait, 1 GiB/s, far above what a server's COPY
/// sends.
const GULP_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// A dump program's output pipe, read in gulps. pg_dump writes through
/// stdio, 4 KiB per `write` on a pipe; a reader woken for every one of them
/// costs a context switch per 4 KiB (a million for a 4 GiB dump, measured:
/// 3 s of system time and 400,000 preemptions on 2 cores, time the server's
/// COPY then waits for). The pipe is widened to 1 MiB and, once the reader
/// has caught up, it lets the pipe fill for a millisecond before reading
/// again. Where the pipe cannot be widened it is read as it comes.
struct Gulps<R> {
    inner: R,
    wait: bool,
}

impl<R: Read + std::os::fd::AsFd> Gulps<R> {
    fn new(inner: R) -> Self {
        let wait =
            rustix::pipe::fcntl_setpipe_size(&inner, PIPE_SIZE).is_ok_and(|size| size >= PIPE_SIZE);
        Gulps { inner, wait }
    }
}

impl<R: Read> Read for Gulps<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.wait && n > 0 && n < GULP && n < buf.len() {
            std::thread::sleep(GULP_WAIT);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    #[test]
    fn output_and_error_output_far_past_a_pipe_are_drained_together() {
        // 4 MiB on each pipe: a reader of one alone would wait forever on a
        // program blocked writing the other.
        let script = "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2; exit 3";
        let mut seen = 0u64;
        let err = run_streaming(sh(script), |out| {
            seen = std::io::copy(out, &mut std::io::sink())
                .map_err(|e| PgError::io("read", std::path::Path::new("sh"), e))?;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(seen, 4 << 20);
        let PgError::Tool {
            command,
            status,
            stderr,
        } = err
        else {
            panic!("expected a tool failure, got {err}");
        };
        assert!(command.starts_with("sh -c head"), "{command}");
        assert!(status.contains('3'), "{status}");
        assert_eq!(stderr.len(), 4 << 20);
    }

    #[test]
    fn a_fed_program_gets_its_input_and_its_words_come_back() {
        let said = feed(sh("wc -c >&2"), &vec![b'x'; 3 << 20]).unwrap();
        assert_eq!(said.trim(), (3u32 << 20).to_string());
        // One that stops reading early and fails: its failure, not the
        // broken pipe.
        let err = feed(sh("echo no thanks >&2; exit 1"), &vec![0; 1 << 20]).unwrap_err();
        assert!(err.to_string().contains("no thanks"), "{err}");
    }

    #[test]
    fn a_program_that_cannot_start_is_named() {
        let err = run_streaming(Command::new("/nonexistent/pg_dump"), |_| Ok(())).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/pg_dump")
                && err.to_string().contains("could not start"),
            "{err}"
        );
        let err = output(&mut Command::new("/nonexistent/pg_ctl"), "pg_ctl").unwrap_err();
        assert!(err.to_string().starts_with("run pg_ctl: "), "{err}");
    }

    #[test]
    fn a_server_program_that_fails_says_what_it_printed() {
        let out = output(&mut sh("echo out; echo err >&2; exit 2"), "sh").unwrap();
        let err = checked(out, "pg_ctl start").unwrap_err().to_string();
        assert!(
            err.starts_with("pg_ctl start failed (exit status: 2): out"),
            "{err}"
        );
        assert!(err.ends_with("err"), "{err}");
        let out = output(&mut sh("echo fine"), "sh").unwrap();
        assert_eq!(checked(out, "sh").unwrap(), "fine\n");
    }
}
