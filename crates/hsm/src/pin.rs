use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::HsmError;

/// Where the HSM user PIN comes from. The PIN itself never appears in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The named environment variable.
    Env(String),
    /// A file readable only by its owner (mode `0600` or `0400`), owned by the current user.
    File(PathBuf),
}

impl PinSource {
    /// Parse `env:NAME` or `file:PATH` (a bare path means a file).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                return Err("empty environment variable name in PIN source 'env:'".into());
            }
            Ok(PinSource::Env(name.to_owned()))
        } else if let Some(path) = s.strip_prefix("file:") {
            Ok(PinSource::File(path.into()))
        } else if s.is_empty() {
            Err("empty PIN source (use env:NAME or file:PATH)".into())
        } else {
            Ok(PinSource::File(s.into()))
        }
    }

    /// Read the PIN. Files must be owner-only and owned by the current user.
    pub fn read(&self) -> Result<Zeroizing<String>, HsmError> {
        let pin = match self {
            PinSource::Env(name) => match std::env::var(name) {
                Ok(v) => Zeroizing::new(v),
                Err(_) => {
                    return Err(HsmError::Pin(format!(
                        "environment variable {name} is not set"
                    )));
                }
            },
            PinSource::File(path) => {
                let meta = std::fs::metadata(path).map_err(|e| {
                    HsmError::Pin(format!("cannot read PIN file {}: {e}", path.display()))
                })?;
                if !meta.is_file() {
                    return Err(HsmError::Pin(format!(
                        "PIN file {} is not a regular file",
                        path.display()
                    )));
                }
                if meta.mode() & 0o077 != 0 {
                    return Err(HsmError::Pin(format!(
                        "PIN file {} is readable by others (mode {:04o}): run `chmod 600 {}`",
                        path.display(),
                        meta.mode() & 0o7777,
                        path.display()
                    )));
                }
                if let Some(uid) = current_uid()
                    && meta.uid() != uid
                {
                    return Err(HsmError::Pin(format!(
                        "PIN file {} is owned by uid {} but the appliance runs as uid {uid}",
                        path.display(),
                        meta.uid()
                    )));
                }
                let raw = Zeroizing::new(std::fs::read(path).map_err(|e| {
                    HsmError::Pin(format!("cannot read PIN file {}: {e}", path.display()))
                })?);
                let text = std::str::from_utf8(&raw).map_err(|_| {
                    HsmError::Pin(format!("PIN file {} is not UTF-8 text", path.display()))
                })?;
                Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())
            }
        };
        if pin.is_empty() {
            return Err(HsmError::Pin(format!("{self} holds an empty PIN")));
        }
        Ok(pin)
    }
}

impl std::fmt::Display for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::Env(n) => write!(f, "env:{n}"),
            PinSource::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// The effective uid of this process, without `unsafe`: `/proc/self` is owned by it.
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parse_sources() {
        assert_eq!(
            PinSource::parse("env:X").unwrap(),
            PinSource::Env("X".into())
        );
        assert_eq!(
            PinSource::parse("file:/a").unwrap(),
            PinSource::File("/a".into())
        );
        assert_eq!(
            PinSource::parse("/a").unwrap(),
            PinSource::File("/a".into())
        );
        assert!(PinSource::parse("env:").is_err());
        assert!(PinSource::parse("").is_err());
    }

    #[test]
    fn file_must_be_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "123456\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = PinSource::File(p.clone()).read().unwrap_err().to_string();
        assert!(
            err.contains("readable by others") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(PinSource::File(p).read().unwrap().as_str(), "123456");
    }

    #[test]
    fn missing_env_and_empty_pin() {
        let err = PinSource::Env("CPS_TRUST_TEST_PIN_SURELY_UNSET".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CPS_TRUST_TEST_PIN_SURELY_UNSET is not set"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            PinSource::File(p)
                .read()
                .unwrap_err()
                .to_string()
                .contains("empty PIN")
        );
    }
}
