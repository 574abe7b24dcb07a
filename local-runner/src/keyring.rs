//! The keyring, read from where `projections.yaml` says it is (an environment variable
//! or a file, never the YAML itself), and what each projection may decrypt with it.
//!
//! The keyring is read only when something needs it: a command that seals (an append of
//! an event type with encrypted fields) or a projection that is granted fields. A
//! keyring file readable by other users is refused, as `ssh` refuses such a key.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use projector::config::{Config, KeyringSource};
use projector::crypto::Keyring;
use projector::encryption::Decryption;
use zeroize::Zeroizing;

/// The configured keyring; an error naming the missing piece when none is configured
/// or its source is unset, unreadable or invalid. The error never shows key text.
pub fn load(config: &Config) -> Result<Keyring> {
    let source = config.encryption.keyring.as_ref().ok_or_else(|| {
        anyhow!(
            "no keyring is configured: add `keyring_env: <VARIABLE>` or `keyring_file: <path>` under `encryption:` in \
             projections.yaml (`projector keys init` makes one)"
        )
    })?;
    let text = read(source)?;
    Keyring::parse(&text).with_context(|| format!("the keyring in {source}"))
}

fn read(source: &KeyringSource) -> Result<Zeroizing<String>> {
    match source {
        KeyringSource::Env(name) => match std::env::var(name) {
            Ok(text) if !text.trim().is_empty() => Ok(Zeroizing::new(text)),
            _ => bail!(
                "the keyring variable {name} (encryption.keyring_env) is unset or empty; set it to the keyring text \
                 (`projector keys init` makes one)"
            ),
        },
        KeyringSource::File(path) => {
            check_private(path)?;
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the keyring file {} (encryption.keyring_file)", path.display())
            })?;
            Ok(Zeroizing::new(text))
        }
    }
}

/// A keyring file must be readable by its owner only.
#[cfg(unix)]
pub fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the keyring file {} (encryption.keyring_file)", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the keyring file {} is readable or writable by others (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check_private(_path: &Path) -> Result<()> {
    Ok(())
}

/// Writes keyring text to `path`, readable by the owner only. A new file is created
/// with mode 0600 from the start; an existing one is replaced atomically (written
/// beside it, then renamed over it) only when `replace` is set.
pub fn write_private(path: &Path, text: &str, replace: bool) -> Result<()> {
    use std::io::Write;
    let exists = path.exists();
    if exists && !replace {
        bail!("{} exists; a keyring is not overwritten (remove it first, or choose another file)", path.display());
    }
    let target = if exists { path.with_extension("new") } else { path.to_path_buf() };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&target).with_context(|| format!("cannot create {}", target.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", target.display()))?;
    if exists {
        std::fs::rename(&target, path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    Ok(())
}

/// What projection `name` may decrypt: its `decrypt:` grant with the configured keyring
/// (loaded once, by the caller, into `keyring`), or nothing.
pub fn decryption(config: &Config, keyring: Option<&Keyring>, name: &str) -> Result<Decryption> {
    let Some(p) = config.projections.get(name) else { return Ok(Decryption::none()) };
    if p.decrypt.is_empty() {
        return Ok(Decryption::none());
    }
    let keyring = keyring.ok_or_else(|| anyhow!("projection {name} decrypts fields, but no keyring was loaded"))?;
    Ok(Decryption::granted(keyring.clone(), p.decrypt.iter().cloned(), &config.encryption, name, Utc::now))
}

/// The keyring if any projection is granted fields (only then do readers need it).
pub fn for_readers(config: &Config) -> Result<Option<Keyring>> {
    if config.projections.values().all(|p| p.decrypt.is_empty()) {
        return Ok(None);
    }
    load(config).map(Some)
}

/// Who runs the command, as audit rows name them.
pub fn actor(command: &str) -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| "operator".into());
    format!("{user} (projector {command})")
}
