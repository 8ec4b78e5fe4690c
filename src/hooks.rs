//! Operator hooks: shell commands run around a switch (`pre_switch`, `post_commit`,
//! `on_rollback`) with `SWITCHYARD_FROM`, `SWITCHYARD_TO` and `SWITCHYARD_REASON` set.
//!
//! A hook runs under `sh -c` with a timeout and is killed when it overruns. Its output is
//! returned line by line so the switch can show it live and log it. Whether a failure stops
//! anything is the caller's decision (only `pre_switch` refuses a switch).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::color::Color;
use crate::config::HooksConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("hook {name} could not start: {reason}")]
    Spawn { name: String, reason: String },
    #[error("hook {name} exited with {status}")]
    Failed { name: String, status: String },
    #[error("hook {name} did not finish within {timeout:?} and was killed")]
    Timeout { name: String, timeout: Duration },
}

/// The `pre_switch` hook, when configured (`Ok` when not): a non-zero exit refuses the switch.
pub async fn pre_switch(
    cfg: &HooksConfig,
    from: Color,
    to: Color,
    force: bool,
    lines: &mpsc::UnboundedSender<String>,
) -> Result<(), HookError> {
    let Some(cmd) = &cfg.pre_switch else {
        return Ok(());
    };
    let reason = if force { "switch (forced)" } else { "switch" };
    run("pre_switch", cmd, from, to, reason, cfg.timeout, lines).await
}

/// Runs `cmd`; every output line (stdout and stderr) is sent to `lines` as it appears.
pub async fn run(
    name: &str,
    cmd: &str,
    from: Color,
    to: Color,
    reason: &str,
    timeout: Duration,
    lines: &mpsc::UnboundedSender<String>,
) -> Result<(), HookError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SWITCHYARD_FROM", from.as_str())
        .env("SWITCHYARD_TO", to.as_str())
        .env("SWITCHYARD_REASON", reason)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Spawn {
            name: name.into(),
            reason: e.to_string(),
        })?;
    let forward = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        let tx = lines.clone();
        let name = name.to_string();
        async move {
            let Some(r) = r else { return };
            let mut l = BufReader::new(r).lines();
            while let Ok(Some(line)) = l.next_line().await {
                tracing::info!(hook = %name, "{line}");
                let _ = tx.send(format!("hook {name}: {line}"));
            }
        }
    };
    let out = forward(child.stdout.take().map(|s| Box::new(s) as _));
    let err = forward(child.stderr.take().map(|s| Box::new(s) as _));
    let wait = async {
        let (status, _, _) = tokio::join!(child.wait(), out, err);
        status
    };
    match tokio::time::timeout(timeout, wait).await {
        Err(_) => Err(HookError::Timeout {
            name: name.into(),
            timeout,
        }),
        Ok(Err(e)) => Err(HookError::Spawn {
            name: name.into(),
            reason: e.to_string(),
        }),
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(HookError::Failed {
            name: name.into(),
            status: s.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn go(cmd: &str, timeout: Duration) -> (Result<(), HookError>, Vec<String>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let r = run(
            "pre_switch",
            cmd,
            Color::Blue,
            Color::Green,
            "deploy",
            timeout,
            &tx,
        )
        .await;
        drop(tx);
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l);
        }
        (r, lines)
    }

    #[tokio::test]
    async fn environment_and_output() {
        let (r, lines) = go(
            "echo $SWITCHYARD_FROM $SWITCHYARD_TO $SWITCHYARD_REASON; echo oops >&2",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r, Ok(()));
        assert!(
            lines.contains(&"hook pre_switch: blue green deploy".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"hook pre_switch: oops".to_string()),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn failure_and_timeout() {
        let (r, _) = go("exit 3", Duration::from_secs(10)).await;
        assert!(matches!(r, Err(HookError::Failed { .. })), "{r:?}");
        let (r, _) = go("sleep 5", Duration::from_millis(200)).await;
        assert!(matches!(r, Err(HookError::Timeout { .. })), "{r:?}");
    }
}
