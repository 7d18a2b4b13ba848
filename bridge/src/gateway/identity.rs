//! The bridge's device identity: an Ed25519 key generated on first start and kept in the
//! state directory (mode 0600), the v3 handshake signature, and the device token the
//! gateway issues after pairing.
//!
//! Wire forms (verified against openclaw 2026.9.6): `publicKey` is base64url without
//! padding of the raw 32 bytes; the device `id` is the lowercase hex SHA-256 of those
//! bytes; the signature covers [`signature_payload_v3`].

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the device key inside the state directory.
pub const IDENTITY_FILE: &str = "device-identity.json";
/// File name of the persisted device token inside the state directory.
pub const DEVICE_TOKEN_FILE: &str = "device-token.json";

/// An Ed25519 device key. `Debug` never prints the secret.
#[derive(Clone)]
pub struct DeviceIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("id", &self.device_id())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    version: u32,
    /// base64url (no padding) of the 32-byte Ed25519 seed.
    secret_key: String,
    /// Informational copies, checked on load.
    public_key: String,
    device_id: String,
}

/// The fields the v3 signature binds, in wire order.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedFields<'a> {
    pub device_id: &'a str,
    pub client_id: &'a str,
    pub client_mode: &'a str,
    pub role: &'a str,
    pub scopes: &'a [String],
    /// The challenge's `ts`.
    pub signed_at_ms: i64,
    /// The token presented in `auth` (shared token, else device token), empty if none.
    pub token: &'a str,
    pub nonce: &'a str,
    pub platform: &'a str,
    pub device_family: &'a str,
}

/// `v3|<deviceId>|<clientId>|<clientMode>|<role>|<scopes,>|<signedAt>|<token>|<nonce>|<platform>|<deviceFamily>`
/// with platform and device family trimmed and ASCII-lowercased, as the gateway rebuilds it.
pub fn signature_payload_v3(f: &SignedFields<'_>) -> String {
    let norm = |s: &str| s.trim().to_ascii_lowercase();
    [
        "v3".to_owned(),
        f.device_id.to_owned(),
        f.client_id.to_owned(),
        f.client_mode.to_owned(),
        f.role.to_owned(),
        f.scopes.join(","),
        f.signed_at_ms.to_string(),
        f.token.to_owned(),
        f.nonce.to_owned(),
        norm(f.platform),
        norm(f.device_family),
    ]
    .join("|")
}

impl DeviceIdentity {
    pub fn generate() -> DeviceIdentity {
        DeviceIdentity {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Loads the identity from `state_dir`, creating it (and the directory) on first use.
    /// The file is created with mode 0600 from the start, never chmod-ed afterwards.
    pub fn load_or_create(state_dir: &Path) -> io::Result<DeviceIdentity> {
        let path = state_dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(state_dir)?;
                let id = DeviceIdentity::generate();
                let file = IdentityFile {
                    version: 1,
                    secret_key: URL_SAFE_NO_PAD.encode(id.key.to_bytes()),
                    public_key: id.public_key_b64(),
                    device_id: id.device_id(),
                };
                let json = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
                write_private_atomic(&path, &json)?;
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }

    fn decode(bytes: &[u8]) -> Result<DeviceIdentity, String> {
        let file: IdentityFile =
            serde_json::from_slice(bytes).map_err(|e| format!("not an identity file: {e}"))?;
        let seed = URL_SAFE_NO_PAD
            .decode(file.secret_key.trim())
            .map_err(|_| "secret_key is not base64url")?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| "secret_key is not 32 bytes")?;
        let id = DeviceIdentity {
            key: SigningKey::from_bytes(&seed),
        };
        if id.device_id() != file.device_id {
            return Err("device_id does not match the key".into());
        }
        Ok(id)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// base64url (no padding) of the raw 32-byte public key.
    pub fn public_key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// Lowercase hex SHA-256 of the raw public key.
    pub fn device_id(&self) -> String {
        hex::encode(Sha256::digest(self.key.verifying_key().as_bytes()))
    }

    /// base64url (no padding) Ed25519 signature over the UTF-8 payload.
    pub fn sign(&self, payload: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes())
    }
}

/// A device token issued in `hello-ok.auth.deviceToken`, with the scopes it was issued for.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDeviceToken {
    pub device_id: String,
    pub role: String,
    pub token: String,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for StoredDeviceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredDeviceToken")
            .field("device_id", &self.device_id)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl StoredDeviceToken {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(DEVICE_TOKEN_FILE)
    }

    /// The stored token for this device, if any. A file for another device is ignored.
    pub fn load(state_dir: &Path, device_id: &str) -> Option<StoredDeviceToken> {
        let bytes = fs::read(Self::path(state_dir)).ok()?;
        let t: StoredDeviceToken = serde_json::from_slice(&bytes).ok()?;
        (t.device_id == device_id && !t.token.is_empty()).then_some(t)
    }

    /// Writes the token atomically with mode 0600.
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        fs::create_dir_all(state_dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_private_atomic(&Self::path(state_dir), &json)
    }

    pub fn remove(state_dir: &Path) -> io::Result<()> {
        match fs::remove_file(Self::path(state_dir)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Writes `bytes` to a fresh temp file created with mode 0600, then renames it over `path`.
fn write_private_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};

    fn fields<'a>(scopes: &'a [String]) -> SignedFields<'a> {
        SignedFields {
            device_id: "abc",
            client_id: "gateway-client",
            client_mode: "backend",
            role: "operator",
            scopes,
            signed_at_ms: 1737264000000,
            token: "tok",
            nonce: "n-1",
            platform: " Linux ",
            device_family: "",
        }
    }

    #[test]
    fn v3_payload_has_the_gateway_layout() {
        let scopes = vec!["operator.read".to_owned(), "operator.admin".to_owned()];
        assert_eq!(
            signature_payload_v3(&fields(&scopes)),
            "v3|abc|gateway-client|backend|operator|operator.read,operator.admin|1737264000000|tok|n-1|linux|"
        );
    }

    #[test]
    fn signature_verifies_with_the_published_key() {
        let id = DeviceIdentity::generate();
        let scopes = vec!["operator.read".to_owned()];
        let payload = signature_payload_v3(&fields(&scopes));
        let sig = URL_SAFE_NO_PAD.decode(id.sign(&payload)).unwrap();
        let pk: [u8; 32] = URL_SAFE_NO_PAD
            .decode(id.public_key_b64())
            .unwrap()
            .try_into()
            .unwrap();
        let vk = VerifyingKey::from_bytes(&pk).unwrap();
        let sig = Signature::from_slice(&sig).unwrap();
        vk.verify(payload.as_bytes(), &sig).unwrap();
        assert!(vk.verify(b"v3|tampered", &sig).is_err());
        assert_eq!(id.device_id(), hex::encode(Sha256::digest(pk)));
        assert_eq!(id.device_id().len(), 64);
        assert!(!id.public_key_b64().contains('='));
    }

    #[test]
    fn identity_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let a = DeviceIdentity::load_or_create(&state).unwrap();
        let b = DeviceIdentity::load_or_create(&state).unwrap();
        assert_eq!(a.device_id(), b.device_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(state.join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn device_token_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let t = StoredDeviceToken {
            device_id: "dev".into(),
            role: "operator".into(),
            token: "s3cret".into(),
            scopes: vec!["operator.read".into()],
        };
        t.save(dir.path()).unwrap();
        assert_eq!(StoredDeviceToken::load(dir.path(), "dev"), Some(t.clone()));
        assert_eq!(StoredDeviceToken::load(dir.path(), "other"), None);
        assert!(!format!("{t:?}").contains("s3cret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(StoredDeviceToken::path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
