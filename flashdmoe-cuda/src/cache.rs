//! Content-addressed storage of compiled kernels: the cache key and the on-disk entry format.
//!
//! A [`CacheKey`] is the SHA-256 of everything that determines NVRTC's output (a format tag,
//! the NVRTC version, the source, every project header, every compiler option, each
//! length-prefixed), so equal keys mean interchangeable images.
//!
//! An entry file `<key hex>.fdmjit` holds:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `FDMJIT` + format version `0x00 0x01` |
//! | 32 | the key (guards against renamed or misplaced files) |
//! | 8 + 8 | log length, image length (little-endian `u64`) |
//! | log length | the NVRTC log (UTF-8) |
//! | image length | the cubin (an ELF image) |
//! | 32 | SHA-256 of everything above |
//!
//! ## Invariants
//!
//! * An entry is never trusted blindly: [`decode`] checks the magic, key, lengths, digest,
//!   UTF-8 log and ELF magic, and anything else is a miss (the caller recompiles and rewrites).
//! * Every image NVRTC produced is stored, spilling ones included: acceptance (entry point,
//!   zero spills) is the JIT's decision on load, so a spill is answered from the cache too.
//! * Writes are atomic: the entry is written to a unique temporary file in the same directory,
//!   flushed, then renamed over the final name, so readers see either no entry or a whole one.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{CudaError, Result};

/// Identifies one compilation's inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    /// Hashes the framed `parts` under the entry format's domain tag.
    pub(crate) fn of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> CacheKey {
        let mut hasher = Sha256::new();
        for part in std::iter::once(MAGIC.as_slice()).chain(parts) {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        CacheKey(hasher.finalize().into())
    }

    /// Lower-case hex, used as the file name.
    pub(crate) fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A cached compilation result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The NVRTC log the image was compiled with (its ptxas report is re-parsed on load).
    pub(crate) log: String,
    /// The cubin.
    pub(crate) image: Vec<u8>,
}

const MAGIC: [u8; 8] = *b"FDMJIT\x00\x01";
const DIGEST: usize = 32;
const HEADER: usize = MAGIC.len() + 32 + 8 + 8;
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// Serialises `entry` under `key`.
pub(crate) fn encode(key: &CacheKey, entry: &Entry) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + entry.log.len() + entry.image.len() + DIGEST);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&key.0);
    bytes.extend_from_slice(&(entry.log.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(entry.image.len() as u64).to_le_bytes());
    bytes.extend_from_slice(entry.log.as_bytes());
    bytes.extend_from_slice(&entry.image);
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

/// The entry in `bytes` if it is a complete, intact entry for `key`; `None` otherwise.
pub(crate) fn decode(key: &CacheKey, bytes: &[u8]) -> Option<Entry> {
    let (body, digest) = bytes.split_at_checked(bytes.len().checked_sub(DIGEST)?)?;
    if Sha256::digest(body).as_slice() != digest {
        return None;
    }
    let (header, payload) = body.split_at_checked(HEADER)?;
    let (magic, rest) = header.split_at(MAGIC.len());
    let (stored_key, lengths) = rest.split_at(32);
    if magic != MAGIC || stored_key != key.0 {
        return None;
    }
    let log_len = usize::try_from(u64::from_le_bytes(lengths[..8].try_into().ok()?)).ok()?;
    let image_len = usize::try_from(u64::from_le_bytes(lengths[8..].try_into().ok()?)).ok()?;
    if log_len.checked_add(image_len)? != payload.len() {
        return None;
    }
    let (log, image) = payload.split_at(log_len);
    if !image.starts_with(ELF_MAGIC) {
        return None;
    }
    Some(Entry { log: std::str::from_utf8(log).ok()?.to_owned(), image: image.to_vec() })
}

/// A directory of entry files.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// Uses (creating if needed) `dir`.
    pub(crate) fn open(dir: PathBuf) -> Result<DiskCache> {
        fs::create_dir_all(&dir).map_err(|source| CudaError::Cache {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(DiskCache { dir })
    }

    /// The directory entries live in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `key` lives.
    pub(crate) fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.fdmjit", key.hex()))
    }

    /// The intact entry for `key`, or `None` (absent, unreadable or corrupt: recompile).
    pub(crate) fn load(&self, key: &CacheKey) -> Option<Entry> {
        decode(key, &fs::read(self.path(key)).ok()?)
    }

    /// Atomically writes (or replaces) the entry for `key`.
    pub(crate) fn store(&self, key: &CacheKey, entry: &Entry) -> Result<()> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let path = self.path(key);
        let temp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            key.hex(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(&temp, &encode(key, entry))
            .map_err(|source| CudaError::Cache { op: "write", path: temp.clone(), source })
            .and_then(|()| {
                fs::rename(&temp, &path).map_err(|source| CudaError::Cache {
                    op: "rename into",
                    path: path.clone(),
                    source,
                })
            });
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tag: &str) -> CacheKey {
        CacheKey::of([tag.as_bytes()])
    }

    fn entry() -> Entry {
        Entry {
            log: "ptxas info : Used 8 registers\n".into(),
            image: b"\x7fELF\x02\x01rest".to_vec(),
        }
    }

    #[test]
    fn keys_are_framed_and_stable() {
        // Framing: moving a byte between parts changes the key.
        assert_ne!(CacheKey::of([b"ab".as_slice(), b"c"]), CacheKey::of([b"a".as_slice(), b"bc"]));
        assert_eq!(key("x"), key("x"));
        assert_ne!(key("x"), key("y"));
        // Pinned value (= sha256(le64(8) ++ magic ++ le64(1) ++ "x"), computed independently):
        // the key must not change between builds or Rust releases, or every user's cache is
        // silently invalidated.
        assert_eq!(
            key("x").hex(),
            "b58eb4dc9a539e49a54d1facdddb33acc4d3575ab91b1a83b08e0f40257ab43e"
        );
    }

    #[test]
    fn entries_round_trip() {
        let k = key("k");
        assert_eq!(decode(&k, &encode(&k, &entry())), Some(entry()));
        let empty_log = Entry { log: String::new(), ..entry() };
        assert_eq!(decode(&k, &encode(&k, &empty_log)), Some(empty_log));
    }

    #[test]
    fn any_corruption_is_a_miss() {
        let k = key("k");
        let good = encode(&k, &entry());
        // Every single-byte flip and every truncation is rejected.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            assert_eq!(decode(&k, &bad), None, "flip at {i}");
            assert_eq!(decode(&k, &good[..i]), None, "truncated to {i}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode(&k, &longer), None);
        // An intact entry stored under another key is not this key's entry.
        assert_eq!(decode(&key("other"), &good), None);
        // A self-consistent entry whose image is not an ELF file is rejected too.
        let not_elf = encode(&k, &Entry { image: b"PTX".to_vec(), ..entry() });
        assert_eq!(decode(&k, &not_elf), None);
    }

    #[test]
    fn disk_store_is_atomic_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path().join("nested/jit")).unwrap();
        let k = key("k");
        assert_eq!(cache.load(&k), None);
        cache.store(&k, &entry()).unwrap();
        assert_eq!(cache.load(&k), Some(entry()));

        fs::write(cache.path(&k), b"garbage").unwrap();
        assert_eq!(cache.load(&k), None);
        let newer = Entry { log: "newer".into(), ..entry() };
        cache.store(&k, &newer).unwrap();
        assert_eq!(cache.load(&k), Some(newer));

        let names: Vec<String> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [format!("{}.fdmjit", k.hex())], "no temporary files left behind");
    }

    #[test]
    fn unwritable_directory_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"").unwrap();
        match DiskCache::open(file.join("sub")) {
            Err(CudaError::Cache { op: "create directory", .. }) => {}
            other => panic!("expected a cache error, got {other:?}"),
        }
    }
}
