//! Validation of the `encryption:` section and of each projection's `decrypt:` grant.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::encryption::{EncryptionConfig, KeyringSource, SubjectSource};
use super::error::{shown, ConfigError};
use super::raw::{RawDekCache, RawEncryption};
use super::syntax::is_env_var_name;
use super::validate::Validator;
use crate::crypto::check_paths;

/// A projection's `decrypt:` list as written, checked once the section is known.
pub(super) struct RawGrant {
    pub(super) projection: String,
    pub(super) paths: Vec<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn encryption(&mut self, raw: Option<Spanned<RawEncryption>>, grants: &[RawGrant]) -> EncryptionConfig {
        let mut config = EncryptionConfig::default();
        let section = raw.as_ref().map(|raw| raw.referenced);
        if let Some(raw) = raw {
            let raw = raw.value;
            config.keyring = self.keyring_source(raw.keyring_env, raw.keyring_file);
            config.fields = self.sealed_fields(raw.fields.map(|f| f.0).unwrap_or_default());
            config.subjects = self.subjects(raw.subjects.map(|s| s.0).unwrap_or_default(), &config.fields);
            if let Some(cache) = raw.cache {
                self.cache(cache, &mut config);
            }
            if config.keyring.is_none() && config.seals_anything() {
                let at = section.map_or_else(|| self.start_of_file(), |s| self.at(&s));
                self.errors.push(ConfigError::KeyringNotNamed { at, what: "`encryption.fields` seals fields".into() });
            }
        }
        let encrypted: Vec<String> = {
            let mut all: Vec<String> = config.fields.values().flatten().cloned().collect();
            all.sort();
            all.dedup();
            all
        };
        for grant in grants {
            for path in &grant.paths {
                if !encrypted.contains(&path.value) {
                    self.errors.push(ConfigError::UnknownDecryptPath {
                        at: self.at(&path.referenced),
                        projection: grant.projection.clone(),
                        path: shown(&path.value),
                        encrypted: encrypted.clone(),
                    });
                }
            }
            if let (Some(first), None) = (grant.paths.first(), &config.keyring) {
                self.errors.push(ConfigError::KeyringNotNamed {
                    at: self.at(&first.referenced),
                    what: format!("projection {} decrypts fields", grant.projection),
                });
            }
        }
        config
    }

    fn keyring_source(&mut self, env: Option<Spanned<String>>, file: Option<Spanned<String>>) -> Option<KeyringSource> {
        match (env, file) {
            (Some(_), Some(file)) => {
                self.errors.push(ConfigError::KeyringNamedTwice { at: self.at(&file.referenced) });
                None
            }
            (Some(env), None) => {
                if is_env_var_name(&env.value) {
                    return Some(KeyringSource::Env(env.value));
                }
                // Keyring text written where its variable's name belongs is a secret.
                let secret = env.value.contains([':', ';', ',']) || env.value.len() > 64;
                self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&env.referenced),
                    field: "keyring_env",
                    value: if secret { "<not shown: it may hold keys>".to_owned() } else { shown(&env.value) },
                    expected: "the name of the environment variable that holds the keyring (e.g. PROJECTOR_KEYRING), \
                               never the keyring itself",
                });
                None
            }
            (None, Some(file)) => {
                if file.value.trim().is_empty() || file.value.contains(';') {
                    self.errors.push(ConfigError::InvalidValue {
                        at: self.at(&file.referenced),
                        field: "keyring_file",
                        value: if file.value.contains(';') {
                            "<not shown: it may hold keys>".to_owned()
                        } else {
                            shown(&file.value)
                        },
                        expected: "the path of a file that holds the keyring (e.g. /run/secrets/projector-keyring), \
                                   never the keyring itself",
                    });
                    return None;
                }
                Some(KeyringSource::File(PathBuf::from(file.value)))
            }
            (None, None) => None,
        }
    }

    fn sealed_fields(
        &mut self,
        entries: Vec<(Spanned<String>, Vec<Spanned<String>>)>,
    ) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (event_type, paths) in entries {
            if event_type.value.trim().is_empty() {
                self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&event_type.referenced),
                    field: "fields",
                    value: shown(&event_type.value),
                    expected: "an event type name as stored (e.g. UserRegistered)",
                });
                continue;
            }
            let owner = format!("encryption.fields.{}", event_type.value);
            if let Some(kept) = self.paths(&owner, paths) {
                out.insert(event_type.value, kept);
            }
        }
        out
    }

    /// The paths if every one is valid and together they could be an event's
    /// `encrypted_fields`; otherwise the errors are recorded and `None` returned.
    fn paths(&mut self, owner: &str, paths: Vec<Spanned<String>>) -> Option<Vec<String>> {
        let mut kept: Vec<Spanned<String>> = Vec::with_capacity(paths.len());
        let mut valid = true;
        for path in paths {
            let mut candidate: Vec<&str> = kept.iter().map(|p| p.value.as_str()).collect();
            candidate.push(&path.value);
            if let Err(e) = check_paths(&candidate) {
                let reason = match e {
                    crate::crypto::CryptoError::InvalidPath { reason, .. } => reason,
                    other => other.to_string(),
                };
                self.errors.push(ConfigError::InvalidFieldPath {
                    at: self.at(&path.referenced),
                    owner: owner.to_owned(),
                    path: shown(&path.value),
                    reason,
                });
                valid = false;
                continue;
            }
            kept.push(path);
        }
        valid.then(|| kept.into_iter().map(|p| p.value).collect())
    }

    fn subjects(
        &mut self,
        entries: Vec<(Spanned<String>, Spanned<String>)>,
        fields: &BTreeMap<String, Vec<String>>,
    ) -> BTreeMap<String, SubjectSource> {
        let mut out = BTreeMap::new();
        for (event_type, field) in entries {
            let Some(sealed) = fields.get(&event_type.value) else {
                self.errors.push(ConfigError::SubjectWithoutFields {
                    at: self.at(&event_type.referenced),
                    event_type: shown(&event_type.value),
                });
                continue;
            };
            let name = field.value.trim();
            if name.is_empty() || name.contains('.') {
                self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&field.referenced),
                    field: "subjects",
                    value: shown(&field.value),
                    expected: "the name of a top-level payload field holding the subject id (e.g. user_id)",
                });
                continue;
            }
            if sealed.iter().any(|path| path.split('.').next() == Some(name)) {
                self.errors.push(ConfigError::EncryptedSubject {
                    at: self.at(&field.referenced),
                    event_type: shown(&event_type.value),
                    field: shown(name),
                });
                continue;
            }
            out.insert(event_type.value, SubjectSource::Field(name.to_owned()));
        }
        out
    }

    fn cache(&mut self, raw: RawDekCache, config: &mut EncryptionConfig) {
        if let Some(age) = raw.max_age.as_ref().and_then(|age| self.duration("max_age", age)) {
            config.cache.max_age = age.max(Duration::from_millis(1));
        }
        if let Some(uses) = raw.max_uses.as_ref().and_then(|uses| self.integer("max_uses", uses, 1, None)) {
            config.cache.max_uses = u32::try_from(uses).unwrap_or(u32::MAX);
        }
        let entries = raw.max_entries.as_ref().and_then(|n| self.integer("max_entries", n, 1, Some(1_000_000)));
        if let Some(entries) = entries {
            config.cache.max_entries = usize::try_from(entries).unwrap_or(1_000_000);
        }
    }

    /// The `decrypt:` list of a projection: valid paths, checked against the section later.
    pub(super) fn grant(&mut self, projection: &str, paths: Vec<Spanned<String>>) -> (Vec<String>, RawGrant) {
        let owner = format!("projection {projection} `decrypt`");
        let kept = self.paths(&owner, paths.clone()).unwrap_or_default();
        (kept, RawGrant { projection: projection.to_owned(), paths })
    }
}
