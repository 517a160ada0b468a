//! Recipe hashes: the name of a cached artifact is the hash of everything
//! that went into it.

use sha2::{Digest, Sha256};
use std::fmt;

/// Accumulates the inputs of a recipe. Each field is length-prefixed, so
/// moving bytes from one field to the next changes the hash.
#[derive(Debug, Clone)]
pub struct RecipeHash(Sha256);

impl RecipeHash {
    /// Starts a hash for an artifact kind (`"kernel"`, `"rootfs"`, …).
    pub fn new(kind: &str) -> Self {
        let mut hash = Self(Sha256::new());
        hash.field("kind", kind.as_bytes());
        hash
    }

    /// Adds one named input.
    pub fn field(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        for part in [name.as_bytes(), value.as_ref()] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    /// The final digest.
    pub fn finish(&self) -> RecipeDigest {
        RecipeDigest(self.0.clone().finalize().into())
    }
}

/// A finished recipe hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecipeDigest(pub [u8; 32]);

impl RecipeDigest {
    /// The first 16 hex digits: the suffix of the artifact's directory name.
    pub fn short(&self) -> String {
        self.hex()[..16].to_string()
    }

    /// All 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A UUID-formatted string from the digest's first or second half
    /// (`half` 0 or 1): stable file system UUIDs and hash seeds.
    pub fn uuid(&self, half: usize) -> String {
        let b = &self.0[half * 16..half * 16 + 16];
        let h = |r: std::ops::Range<usize>| -> String { b[r].iter().map(|x| format!("{x:02x}")).collect() };
        format!("{}-{}-{}-{}-{}", h(0..4), h(4..6), h(6..8), h(8..10), h(10..16))
    }
}

impl fmt::Debug for RecipeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipeDigest({})", self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(fragment: &str, version: &str) -> RecipeDigest {
        RecipeHash::new("kernel").field("fragment", fragment).field("version", version).finish()
    }

    #[test]
    fn stable_across_runs() {
        // Pinned: if this changes, every cached artifact gets a new name.
        assert_eq!(
            digest("CONFIG_X=y\n", "1.0").hex(),
            "f8fa942d99776cefdb5e0539a14b7d76e5895fdf43da227fa952cf443827826e"
        );
    }

    #[test]
    fn changes_when_an_input_changes() {
        let base = digest("CONFIG_X=y\n", "1.0");
        assert_ne!(base, digest("CONFIG_X=y\nCONFIG_Y=y\n", "1.0"));
        assert_ne!(base, digest("CONFIG_X=y\n", "1.1"));
    }

    #[test]
    fn fields_are_delimited() {
        let a = RecipeHash::new("k").field("a", "bc").field("d", "").finish();
        let b = RecipeHash::new("k").field("a", "b").field("d", "c").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn short_and_uuid_shapes() {
        let d = digest("x", "y");
        assert_eq!(d.short().len(), 16);
        assert!(d.hex().starts_with(&d.short()));
        let u = d.uuid(1);
        assert_eq!(u.len(), 36);
        assert_ne!(d.uuid(0), u);
    }
}
