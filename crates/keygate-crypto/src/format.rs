//! The one self-describing ciphertext format (see `FORMAT.md`).
//!
//! ```text
//! 0      1      2            6                  18                      len-16     len
//! | ver  | kind | key_ver BE | nonce (12 bytes) | ciphertext (n bytes)  | tag (16) |
//! ```
//!
//! AAD handed to AES-256-GCM = header bytes 0..6 (version, kind, key version) || the kind's
//! binding. (The nonce, bytes 6..18, is authenticated by GCM itself: it determines the
//! keystream and the tag mask, so repeating it in the AAD would only cost a GHASH block.)
//! The binding is a fixed item
//! sequence per kind, fixed-size items raw and variable-length ones `u32 BE length || bytes`,
//! so the encoding is injective ("ab"+"c" and "a"+"bc" differ). The authenticated kind byte
//! keeps the kinds apart.
//!
//! Invariant: `open` never returns plaintext whose tag did not verify, and never panics on
//! attacker-controlled input.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::CryptoError;

/// Format version byte written by this build.
pub const FORMAT_V1: u8 = 1;
/// Length of version + kind + key version + nonce.
pub(crate) const HEADER_LEN: usize = 18;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Smallest well-formed ciphertext: header and tag around an empty plaintext.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;

/// What a ciphertext protects; the kind byte at offset 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A secret field sealed under a DEK.
    Field = 1,
    /// A DEK (or a password-wrapped DEK) wrapped under the master key (KEK).
    DekWrap = 2,
    /// A DEK wrapped under a password-derived key.
    PasswordWrap = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Field),
            2 => Some(Self::DekWrap),
            3 => Some(Self::PasswordWrap),
            _ => None,
        }
    }
}

/// The public part of a ciphertext's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiphertextInfo {
    /// What the ciphertext protects.
    pub kind: Kind,
    /// Key version: the DEK version for [`Kind::Field`] and [`Kind::PasswordWrap`], the KEK
    /// (master key) version for [`Kind::DekWrap`].
    pub key_version: u32,
}

/// Reads and checks the header of any keygate ciphertext without decrypting it.
///
/// The values are unauthenticated until the ciphertext is opened; use them only to pick a key.
pub fn inspect(ct: &[u8]) -> Result<CiphertextInfo, CryptoError> {
    let (&version, rest) = ct.split_first().ok_or(CryptoError::Malformed)?;
    if version != FORMAT_V1 {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    if ct.len() < MIN_LEN {
        return Err(CryptoError::Malformed);
    }
    let kind = Kind::from_byte(rest[0]).ok_or(CryptoError::Malformed)?;
    let key_version = u32::from_be_bytes([ct[2], ct[3], ct[4], ct[5]]);
    Ok(CiphertextInfo { kind, key_version })
}

/// Reads the key version from a ciphertext header so a reader can pick the right key.
pub fn ciphertext_key_version(ct: &[u8]) -> Result<u32, CryptoError> {
    inspect(ct).map(|i| i.key_version)
}

/// Header bytes that go into the AAD: version, kind, key version.
const AAD_HEADER_LEN: usize = 6;

/// Bytes kept inline for the AAD before spilling to the heap: the header part, two UUIDs, a
/// length and a field name of up to ~80 bytes, i.e. every real field, without allocation.
const INLINE_AAD: usize = 128;

/// The AAD under construction: header slot, then the kind's binding. Each kind has a fixed
/// item sequence; fixed-size items (UUIDs, u32s) are written as is and variable-length ones
/// with a `u32 BE` length prefix, so the encoding is injective ("ab"+"c" ≠ "a"+"bc").
pub(crate) struct Binding {
    inline: [u8; INLINE_AAD],
    len: usize,
    spill: Option<Vec<u8>>,
}

impl Binding {
    pub(crate) fn new() -> Self {
        // The first AAD_HEADER_LEN bytes are the header slot, filled in by `seal`/`open`.
        Self {
            inline: [0; INLINE_AAD],
            len: AAD_HEADER_LEN,
            spill: None,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(v) = self.spill.as_mut() {
            v.extend_from_slice(bytes);
        } else if self.len + bytes.len() <= INLINE_AAD {
            self.inline[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            let mut v = Vec::with_capacity(self.len + bytes.len() + 16);
            v.extend_from_slice(&self.inline[..self.len]);
            v.extend_from_slice(bytes);
            self.spill = Some(v);
        }
    }

    /// Appends a fixed-size item (its length is implied by its position).
    pub(crate) fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.push(bytes);
        self
    }

    /// Appends a variable-length item as `u32 BE length || bytes`.
    pub(crate) fn var(&mut self, bytes: &[u8]) -> &mut Self {
        // Field names are short; saturating keeps this total (a >4 GiB name cannot exist).
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.push(&len.to_be_bytes());
        self.push(bytes);
        self
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.spill.as_mut() {
            Some(v) => v.as_mut_slice(),
            None => &mut self.inline[..self.len],
        }
    }

    /// The binding alone, without the header slot (what a KMS gets as its context).
    pub(crate) fn into_binding_bytes(mut self) -> Vec<u8> {
        self.as_mut_slice()[AAD_HEADER_LEN..].to_vec()
    }

    fn aad_with_header(&mut self, header: &[u8]) -> &[u8] {
        let buf = self.as_mut_slice();
        buf[..AAD_HEADER_LEN].copy_from_slice(&header[..AAD_HEADER_LEN]);
        buf
    }
}

/// Seals `plaintext` with a fresh random nonce.
///
/// # Panics
/// Only if `plaintext` exceeds AES-GCM's limit of 2^36 - 32 bytes (64 GiB).
pub(crate) fn seal(
    cipher: &Aes256Gcm,
    kind: Kind,
    key_version: u32,
    mut binding: Binding,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.push(kind as u8);
    out.extend_from_slice(&key_version.to_be_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    // DESIGN §7: an OS-seeded userspace CSPRNG is acceptable for nonces.
    rand::thread_rng().fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let aad = binding.aad_with_header(header);
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::from(nonce), aad, body)
        .expect("AES-GCM plaintext exceeds 64 GiB");
    out.extend_from_slice(&tag);
    out
}

/// Opens a ciphertext of `kind`, returning the plaintext only if the tag verifies.
///
/// `expected_version`: the key version the caller's binding names, when the binding does not
/// carry it itself; a header naming another version is an integrity failure.
pub(crate) fn open(
    cipher: &Aes256Gcm,
    kind: Kind,
    expected_version: Option<u32>,
    mut binding: Binding,
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let info = inspect(ct)?;
    if info.kind != kind {
        return Err(CryptoError::Malformed);
    }
    if expected_version.is_some_and(|v| v != info.key_version) {
        return Err(CryptoError::Integrity);
    }
    let (header, rest) = ct.split_at(HEADER_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let aad = binding.aad_with_header(header);
    let nonce: [u8; NONCE_LEN] = header[6..].try_into().map_err(|_| CryptoError::Malformed)?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::Malformed)?;
    let mut buf = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_in_place_detached(&Nonce::from(nonce), aad, &mut buf, &Tag::from(tag))
        .map_err(|_| CryptoError::Integrity)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_rejects_short_and_unknown() {
        assert_eq!(inspect(&[]), Err(CryptoError::Malformed));
        assert_eq!(inspect(&[2; 40]), Err(CryptoError::UnsupportedVersion(2)));
        assert_eq!(inspect(&[1; MIN_LEN - 1]), Err(CryptoError::Malformed));
        let mut ok = vec![0u8; MIN_LEN];
        ok[0] = 1;
        ok[1] = 9;
        assert_eq!(inspect(&ok), Err(CryptoError::Malformed));
        ok[1] = 1;
        ok[2..6].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            inspect(&ok),
            Ok(CiphertextInfo {
                kind: Kind::Field,
                key_version: 7
            })
        );
    }

    #[test]
    fn binding_spills_to_heap_unchanged() {
        let long = [7u8; 300];
        let mut b = Binding::new();
        b.fixed(&[1; 16]).var(&long).fixed(&[2; 4]);
        let bytes = b.into_binding_bytes();
        assert_eq!(bytes.len(), 16 + 4 + 300 + 4);
        assert_eq!(&bytes[16..20], &300u32.to_be_bytes());
        assert_eq!(&bytes[bytes.len() - 4..], &[2; 4]);
    }

    #[test]
    fn binding_is_injective_across_item_boundaries() {
        let mut a = Binding::new();
        a.var(b"ab").var(b"c");
        let mut b = Binding::new();
        b.var(b"a").var(b"bc");
        assert_ne!(a.into_binding_bytes(), b.into_binding_bytes());
    }
}
