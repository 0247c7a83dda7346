//! Per-device tokens (spec §11): `mfwd_` + 32 hex, only their sha256 kept
//! in `{CONFIG_DIR}/webdav-tokens.json`, written atomically. Every check
//! looks at the file's stamp, so a revocation (by this process or an
//! edit of the file) applies to the next request.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The store file's name inside `CONFIG_DIR`.
pub const TOKEN_FILE_NAME: &str = "webdav-tokens.json";

/// Longest label accepted.
pub const MAX_LABEL_CHARS: usize = 200;

/// One stored token: everything but the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredToken {
    id: String,
    label: String,
    hash: String,
    prefix: String,
    created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<StoredToken>,
}

/// A token as listed (`GET /api/webdav-tokens`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// 16 hex chars.
    pub id: String,
    /// What the user called the device.
    pub label: String,
    /// First 4 hex of the random part, to recognise a token.
    pub prefix: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A new token: the only time the token itself is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewToken {
    /// The listed fields.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// `mfwd_` + 32 hex chars.
    pub token: String,
}

/// Why the token store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// The label is longer than [`MAX_LABEL_CHARS`].
    #[error("label too long (max 200 chars)")]
    LabelTooLong,
    /// The file exists but cannot be read or parsed: kept as it is.
    #[error("token file {path:?} unreadable: {message}")]
    Unreadable {
        /// The store file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Writing the file failed; nothing changed.
    #[error("cannot save token file {path:?}: {cause}")]
    Save {
        /// The store file.
        path: PathBuf,
        /// What the system said.
        cause: io::Error,
    },
}

/// The file's identity when last read, to notice changes cheaply.
type Stamp = Option<(SystemTime, u64)>;

#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    tokens: Result<Vec<StoredToken>, String>,
}

/// The token store of one `CONFIG_DIR`; share it (`Arc`) between the API
/// routes and the WebDAV server.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Option<Cached>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn sha256_hex(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// `2026-12-02T02:35:49Z` (days to civil date after Howard Hinnant).
fn rfc3339_utc(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let shifted = days as i64 + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

impl TokenStore {
    /// The store of `config_dir` (the file need not exist yet).
    pub fn new(config_dir: &Path) -> Self {
        TokenStore {
            path: config_dir.join(TOKEN_FILE_NAME),
            cache: Mutex::new(None),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(&self) -> io::Result<Stamp> {
        match fs::metadata(&self.path) {
            Ok(metadata) => Ok(Some((metadata.modified()?, metadata.len()))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn read_file(&self) -> Result<Vec<StoredToken>, String> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<TokenFile>(&bytes)
                .map(|file| file.tokens)
                .map_err(|error| error.to_string()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Runs `use_tokens` on the current tokens, re-reading the file when
    /// it changed since the last look.
    fn with_tokens<R>(
        &self,
        use_tokens: impl FnOnce(&[StoredToken]) -> R,
    ) -> Result<R, TokenStoreError> {
        let unreadable = |message: String| TokenStoreError::Unreadable {
            path: self.path.clone(),
            message,
        };
        let mut cache = self.cache.lock();
        let stamp = self
            .stamp()
            .map_err(|error| unreadable(error.to_string()))?;
        if cache.as_ref().is_none_or(|cached| cached.stamp != stamp) {
            *cache = Some(Cached {
                stamp,
                tokens: self.read_file(),
            });
        }
        match cache.as_ref().map(|cached| &cached.tokens) {
            Some(Ok(tokens)) => Ok(use_tokens(tokens)),
            Some(Err(message)) => Err(unreadable(message.clone())),
            None => Err(unreadable("not loaded".to_owned())),
        }
    }

    /// The tokens, without their hashes.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenStoreError> {
        self.with_tokens(|tokens| tokens.iter().map(info_of).collect())
    }

    /// Mints a token for `label` (empty → "Unnamed token").
    pub fn create(&self, label: &str) -> Result<NewToken, TokenStoreError> {
        let label = label.trim();
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(TokenStoreError::LabelTooLong);
        }
        let label = if label.is_empty() {
            "Unnamed token"
        } else {
            label
        };
        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random);
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let random_hex = hex(&random);
        let token = format!("mfwd_{random_hex}");
        let stored = StoredToken {
            id: hex(&id),
            label: label.to_owned(),
            hash: sha256_hex(&token),
            prefix: random_hex[..4].to_owned(),
            created_at: rfc3339_utc(SystemTime::now()),
        };
        let info = info_of(&stored);
        let mut tokens = self.with_tokens(<[StoredToken]>::to_vec)?;
        tokens.push(stored);
        self.save(tokens)?;
        Ok(NewToken { info, token })
    }

    /// Revokes the token `id`; false when there is none.
    pub fn revoke(&self, id: &str) -> Result<bool, TokenStoreError> {
        let mut tokens = self.with_tokens(<[StoredToken]>::to_vec)?;
        let n_before = tokens.len();
        tokens.retain(|token| token.id != id);
        if tokens.len() == n_before {
            return Ok(false);
        }
        self.save(tokens)?;
        Ok(true)
    }

    /// Whether `token` is a live token. Compares every stored hash in
    /// constant time; an unreadable file denies everyone.
    pub fn verify(&self, token: &str) -> bool {
        let hash = sha256_hex(token);
        self.with_tokens(|tokens| {
            tokens.iter().fold(false, |found, stored| {
                found | bool::from(stored.hash.as_bytes().ct_eq(hash.as_bytes()))
            })
        })
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "webdav: token file unreadable, denying everyone");
            false
        })
    }

    /// Writes the file atomically (temporary file, fsync, rename) and
    /// refreshes the cache.
    fn save(&self, tokens: Vec<StoredToken>) -> Result<(), TokenStoreError> {
        let save_error = |cause| TokenStoreError::Save {
            path: self.path.clone(),
            cause,
        };
        let file = TokenFile { tokens };
        let mut bytes = serde_json::to_vec_pretty(&file)
            .map_err(|error| save_error(io::Error::other(error)))?;
        bytes.push(b'\n');
        let temporary = self
            .path
            .with_extension(format!("json.tmp-{}", std::process::id()));
        let write = || -> io::Result<()> {
            if let Some(parent) = self.path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut out = fs::File::create(&temporary)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            fs::rename(&temporary, &self.path)?;
            if let Some(parent) = self.path.parent() {
                fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(cause) = write() {
            let _ = fs::remove_file(&temporary);
            return Err(save_error(cause));
        }
        let stamp = self.stamp().ok().flatten();
        *self.cache.lock() = Some(Cached {
            stamp,
            tokens: Ok(file.tokens),
        });
        Ok(())
    }
}

fn info_of(stored: &StoredToken) -> TokenInfo {
    TokenInfo {
        id: stored.id.clone(),
        label: stored.label.clone(),
        prefix: stored.prefix.clone(),
        created_at: stored.created_at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_minted_verified_listed_and_revoked() {
        let config_dir = tempfile::tempdir().expect("config dir");
        let store = TokenStore::new(config_dir.path());
        assert!(store.list().expect("empty").is_empty());
        let new = store.create("  ").expect("create");
        assert_eq!(new.info.label, "Unnamed token");
        assert!(new.token.starts_with("mfwd_") && new.token.len() == 37);
        assert_eq!(new.info.prefix, new.token[5..9]);
        assert_eq!(new.info.id.len(), 16);
        assert!(store.verify(&new.token));
        assert!(!store.verify("mfwd_00000000000000000000000000000000"));
        let text = fs::read_to_string(store.path()).expect("file");
        assert!(!text.contains(&new.token) && text.contains(&sha256_hex(&new.token)));
        // A second store on the same file (another process) sees it.
        assert!(TokenStore::new(config_dir.path()).verify(&new.token));
        assert!(matches!(
            store.create(&"x".repeat(201)),
            Err(TokenStoreError::LabelTooLong)
        ));
        assert!(store.revoke(&new.info.id).expect("revoke"));
        assert!(!store.revoke(&new.info.id).expect("revoke again"));
        assert!(!store.verify(&new.token));
        // A corrupt file denies everyone and is not overwritten.
        let other = store.create("tv").expect("create");
        fs::write(store.path(), b"{not json").expect("corrupt");
        assert!(!store.verify(&other.token));
        assert!(store.create("x").is_err());
        assert_eq!(fs::read(store.path()).expect("kept"), b"{not json");
    }

    #[test]
    fn dates_are_rfc3339() {
        let time = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339_utc(time), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
