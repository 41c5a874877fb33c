//! [`Key`]: AES-256-GCM sealing with a fresh random nonce per message.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use zeroize::Zeroize;

use crate::{fill_random, CryptoError};

/// Bytes a sealed message adds to its plaintext: the nonce and the GCM tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of the nonce that starts a sealed message.
pub const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// 32 bytes of AES-256 key material, wiped from memory when dropped.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
    cipher: LessSafeKey,
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

impl Key {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // A 32-byte key is always valid for AES-256-GCM.
        let cipher = match UnboundKey::new(&AES_256_GCM, &bytes) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("AES-256-GCM accepts every 32-byte key"),
        };
        Key { bytes, cipher }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        Ok(Key::from_bytes(bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Seals `plaintext`: returns `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Seals `plaintext`, appending `nonce ‖ ciphertext ‖ tag` to `out`.
    pub fn seal_into(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| CryptoError::Authentication)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals, where it lies, a plaintext the caller appended to `out` after
    /// reserving [`NONCE_LEN`] bytes at `start`: `out[start..start + NONCE_LEN]`
    /// becomes the nonce, the rest is encrypted in place and the tag is
    /// appended. The result is what [`Key::seal_into`] would have appended,
    /// without the copy.
    pub fn seal_appended(
        &self,
        aad: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), CryptoError> {
        if out.len() < start + NONCE_LEN {
            return Err(CryptoError::Malformed {
                what: "message to seal",
                reason: "no room was reserved for the nonce".into(),
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        out[start..start + NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start + NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Authentication)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a message made by [`Key::seal`] with the same associated data.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = sealed.to_vec();
        let len = self.open_in_place(aad, &mut buf)?.len();
        buf.truncate(NONCE_LEN + len);
        buf.drain(..NONCE_LEN);
        Ok(buf)
    }

    /// Opens a message made by [`Key::seal`] where it lies, without copying:
    /// returns the plaintext, which is the middle of `sealed` decrypted in place.
    /// On failure the contents of `sealed` are unspecified.
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Authentication);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Authentication)?;
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag = Tag::try_from(&tag[..]).map_err(|_| CryptoError::Authentication)?;
        self.cipher
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, ciphertext, 0..)
            .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CryptoError;
    use proptest::prelude::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_aad() {
        let k = Key::generate().unwrap();
        let sealed = k.seal(b"aad", b"hello").unwrap();
        assert_eq!(k.open(b"aad", &sealed).unwrap(), b"hello");
        assert!(matches!(
            k.open(b"other", &sealed),
            Err(CryptoError::Authentication)
        ));
        let other = Key::generate().unwrap();
        assert!(other.open(b"aad", &sealed).is_err());
    }

    /// The stored format is standard AES-256-GCM (`nonce ‖ ciphertext ‖ tag`):
    /// NIST's GCM test case 16 must open, whatever implementation is linked, so
    /// repositories written by any build stay readable.
    #[test]
    fn opens_the_nist_aes_256_gcm_test_vector() {
        let h = |s: &str| hex::decode(s).unwrap();
        let key: [u8; 32] = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .try_into()
            .unwrap();
        let mut sealed = h("cafebabefacedbaddecaf888");
        sealed.extend(h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"));
        sealed.extend(h("76fc6ece0f4e1768cddf8853bb2d551b"));
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        assert_eq!(Key::from_bytes(key).open(&aad, &sealed).unwrap(), plain);
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let k = Key::generate().unwrap();
        assert_ne!(k.seal(b"", b"same").unwrap(), k.seal(b"", b"same").unwrap());
    }

    #[test]
    fn flipped_byte_fails_authentication() {
        let k = Key::generate().unwrap();
        let mut sealed = k.seal(b"", &[7u8; 100]).unwrap();
        sealed[40] ^= 1;
        assert!(k.open(b"", &sealed).is_err());
    }

    proptest! {
        #[test]
        fn seal_open_round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let k = Key::from_bytes([3u8; 32]);
            let sealed = k.seal(&aad, &data).unwrap();
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(k.open(&aad, &sealed).unwrap(), data.clone());
            let mut appended = b"prefix".to_vec();
            appended.extend_from_slice(&[0u8; NONCE_LEN]);
            appended.extend_from_slice(&data);
            k.seal_appended(&aad, &mut appended, 6).unwrap();
            prop_assert_eq!(&appended[..6], b"prefix");
            prop_assert_eq!(k.open(&aad, &appended[6..]).unwrap(), data.clone());
            let mut in_place = sealed.clone();
            prop_assert_eq!(k.open_in_place(&aad, &mut in_place).unwrap(), &data[..]);
        }
    }
}
