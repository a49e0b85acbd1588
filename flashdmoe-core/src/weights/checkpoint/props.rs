//! Properties of the loader: arbitrary or corrupted files are errors, never panics.

use proptest::prelude::*;

use super::*;

fn config() -> MoeConfig {
    MoeConfig { hidden: 64, inter: 64, experts: 2, ..MoeConfig::default() }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = LayerWeights::from_safetensors(&config(), &bytes, None);
    }

    #[test]
    fn corrupted_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let c = config();
        let mut bytes = LayerWeights::generate(&c, 1).unwrap().to_safetensors(&c).unwrap();
        // Corrupt the length prefix and the JSON header, where the structure lives.
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, value) in flips {
            let i = at.index(header_end);
            bytes[i] = value;
        }
        let _ = LayerWeights::from_safetensors(&c, &bytes, None);
    }
}
