//! A private rsyslogd for interop tests: its own configuration and work directory, validated
//! with `rsyslogd -N1`, stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Daemon;

pub struct Rsyslog {
    pub daemon: Daemon,
    pub dir: PathBuf,
    pub name: String,
}

impl Rsyslog {
    /// Writes `conf` to `dir/<name>.conf`, checks it, starts `rsyslogd -n`.
    pub fn start(dir: &Path, name: &str, conf: &str) -> Rsyslog {
        std::fs::create_dir_all(dir.join(format!("work-{name}"))).unwrap();
        let cpath = dir.join(format!("{name}.conf"));
        std::fs::write(&cpath, conf).unwrap();
        let check = Command::new(crate::peer("rsyslogd"))
            .arg("-N1")
            .arg("-f")
            .arg(&cpath)
            .output()
            .expect("rsyslogd (apt-get install rsyslog rsyslog-gnutls)");
        assert!(
            check.status.success(),
            "rsyslogd -N1 refused {name}.conf: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut cmd = Command::new(crate::peer("rsyslogd"));
        cmd.arg("-n")
            .arg("-f")
            .arg(&cpath)
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .stdin(Stdio::null());
        let daemon = Daemon::spawn(
            &format!("rsyslogd {name}"),
            cmd,
            &dir.join(format!("{name}.out")),
        );
        Rsyslog {
            daemon,
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn stop(&mut self) {
        self.daemon.stop(Duration::from_secs(10));
    }
}

/// `logger --rfc5424 --tcp --octet-count` to 127.0.0.1:`port`, MSGID `IHE+RFC-3881`.
pub fn logger(port: u16, msg: &str) {
    let out = Command::new(crate::peer("logger"))
        .args([
            "--rfc5424",
            "--tcp",
            "--octet-count",
            "--server",
            "127.0.0.1",
        ])
        .args(["--port", &port.to_string(), "--size", "65536"])
        .args(["--msgid", "IHE+RFC-3881", "-t", "cps-test", "--"])
        .arg(msg)
        .output()
        .expect("logger");
    crate::assert_success(&out, "logger");
}
