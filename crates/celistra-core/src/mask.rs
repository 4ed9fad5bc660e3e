//! Masking secret values in an output stream: every exact occurrence of a secret's value becomes
//! [`marker`]`(NAME)`, `[secret:NAME]`, also when the occurrence is split across chunks.
//!
//! [`Masker::push`] takes the stream a chunk at a time. Where the end of what it has seen could
//! still be the start of a secret, it holds back that tail (only as much as could still begin a
//! secret, never more), and emits it once the next chunk decides, or at [`Masker::finish`]. Where
//! no secret could begin, nothing is held back, so interactive output is not delayed. Masking a
//! stream chunk by chunk gives exactly what masking it whole gives: the leftmost occurrence wins,
//! and of secrets that occur at the same place, the longest.
//!
//! What it does not do: find a secret that was transformed (encoded, split by escape sequences,
//! reversed), or one shorter than [`crate::secret::MIN_VALUE_LEN`] (refused when it is set).

/// What replaces an occurrence of secret `name`'s value.
pub fn marker(name: &str) -> String {
    format!("[secret:{name}]")
}

/// A streaming masker over a fixed set of secrets. Its `Debug` shows no value.
#[derive(Clone)]
pub struct Masker {
    /// (value, marker), longest value first, empty values left out.
    secrets: Vec<(Vec<u8>, Vec<u8>)>,
    /// Which bytes begin some secret, one bit each: every running agent's output carries a
    /// masker, most with no secret at all.
    starts: ByteSet,
    /// The tail held back: a proper prefix of some secret.
    held: Vec<u8>,
}

/// A set of byte values.
#[derive(Clone, Copy, Default)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, byte: u8) {
        self.0[usize::from(byte >> 6)] |= 1 << (byte & 63);
    }

    fn contains(self, byte: u8) -> bool {
        self.0[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0
    }
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("secrets", &self.secrets.len())
            .field("held", &self.held.len())
            .finish()
    }
}

impl Masker {
    /// A masker for `(name, value)` pairs. An empty value is ignored.
    pub fn new<N: AsRef<str>, V: AsRef<[u8]>>(secrets: impl IntoIterator<Item = (N, V)>) -> Masker {
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = secrets
            .into_iter()
            .filter(|(_, value)| !value.as_ref().is_empty())
            .map(|(name, value)| (value.as_ref().to_vec(), marker(name.as_ref()).into_bytes()))
            .collect();
        list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        list.dedup_by(|a, b| a.0 == b.0);
        let mut starts = ByteSet::default();
        for (value, _) in &list {
            starts.insert(value[0]);
        }
        Masker {
            secrets: list,
            starts,
            held: Vec::new(),
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// How many bytes are held back, waiting for the next chunk.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Masks `chunk`, appending what can be released to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.secrets.is_empty() {
            out.extend_from_slice(chunk);
            return;
        }
        if self.held.is_empty() {
            let rest = self.scan(chunk, false, out);
            self.held.extend_from_slice(rest);
        } else {
            let mut data = std::mem::take(&mut self.held);
            data.extend_from_slice(chunk);
            let rest = self.scan(&data, false, out).to_vec();
            self.held = rest;
        }
    }

    /// Ends the stream: masks and releases what was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let data = std::mem::take(&mut self.held);
        let rest = self.scan(&data, true, out);
        debug_assert!(rest.is_empty());
    }

    /// Masks `data` into `out`, returning the tail that must wait for more data (none at `end`).
    fn scan<'a>(&self, data: &'a [u8], end: bool, out: &mut Vec<u8>) -> &'a [u8] {
        let mut copied = 0;
        let mut i = 0;
        while i < data.len() {
            if !self.starts.contains(data[i]) {
                i += 1;
                continue;
            }
            let rest = &data[i..];
            // A longer secret that `rest` begins could still complete: wait for more.
            if !end
                && self
                    .secrets
                    .iter()
                    .any(|(value, _)| value.len() > rest.len() && value.starts_with(rest))
            {
                out.extend_from_slice(&data[copied..i]);
                return rest;
            }
            // Longest first: the first that matches is the longest here.
            match self
                .secrets
                .iter()
                .find(|(value, _)| rest.starts_with(value))
            {
                Some((value, marker)) => {
                    out.extend_from_slice(&data[copied..i]);
                    out.extend_from_slice(marker);
                    i += value.len();
                    copied = i;
                }
                None => i += 1,
            }
        }
        out.extend_from_slice(&data[copied..]);
        &[]
    }
}

/// Masks a whole text at once.
pub fn mask_all<N: AsRef<str>, V: AsRef<[u8]>>(
    secrets: impl IntoIterator<Item = (N, V)>,
    data: &[u8],
) -> Vec<u8> {
    let mut masker = Masker::new(secrets);
    let mut out = Vec::with_capacity(data.len());
    masker.push(data, &mut out);
    masker.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_byte_set_holds_exactly_the_bytes_put_in_at_each_word_edge() {
        let edges = [0u8, 1, 62, 63, 64, 65, 127, 128, 191, 192, 254, 255];
        for &member in &edges {
            let mut set = ByteSet::default();
            set.insert(member);
            for byte in 0..=u8::MAX {
                assert_eq!(set.contains(byte), byte == member, "{member} {byte}");
            }
        }
    }

    fn masked_in_chunks(secrets: &[(&str, &str)], chunks: &[&str]) -> (String, Vec<usize>) {
        let mut masker = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        let mut held = vec![];
        for chunk in chunks {
            masker.push(chunk.as_bytes(), &mut out);
            held.push(masker.held());
        }
        masker.finish(&mut out);
        (String::from_utf8(out).unwrap(), held)
    }

    #[test]
    fn an_occurrence_is_replaced_by_the_marker_with_the_secret_s_name() {
        let (out, _) = masked_in_chunks(&[("TOKEN", "hunter22")], &["pw=hunter22 and hunter22\n"]);
        assert_eq!(out, "pw=[secret:TOKEN] and [secret:TOKEN]\n");
    }

    #[test]
    fn an_occurrence_split_across_chunks_is_replaced_too() {
        let (out, held) = masked_in_chunks(&[("TOKEN", "hunter22")], &["pw=hun", "ter", "22!"]);
        assert_eq!(out, "pw=[secret:TOKEN]!");
        assert_eq!(held, [3, 6, 0]);
    }

    #[test]
    fn nothing_is_held_back_when_no_secret_could_begin_at_the_end() {
        let mut masker = Masker::new([("TOKEN", "hunter22")]);
        let mut out = Vec::new();
        masker.push(b"prompt> ", &mut out);
        assert_eq!(out, b"prompt> ");
        assert_eq!(masker.held(), 0);
        masker.push(b"huntex", &mut out);
        assert_eq!(out, b"prompt> huntex");
        assert_eq!(masker.held(), 0);
    }

    #[test]
    fn a_held_tail_that_never_completes_is_released_at_the_end() {
        let (out, held) = masked_in_chunks(&[("TOKEN", "hunter22")], &["a hunter2"]);
        assert_eq!(held, [7]);
        assert_eq!(out, "a hunter2");
    }

    #[test]
    fn the_longest_secret_at_a_place_wins_and_overlaps_are_found() {
        let secrets = [("SHORT", "abcd"), ("LONG", "abcdef")];
        assert_eq!(
            masked_in_chunks(&secrets, &["xabcdefy"]).0,
            "x[secret:LONG]y"
        );
        assert_eq!(
            masked_in_chunks(&secrets, &["xabcd", "efy"]).0,
            "x[secret:LONG]y"
        );
        assert_eq!(
            masked_in_chunks(&secrets, &["xabcd", "eg"]).0,
            "x[secret:SHORT]eg"
        );
        assert_eq!(masked_in_chunks(&secrets, &["xabcd"]).0, "x[secret:SHORT]");
        // A secret that begins inside an almost-match of another.
        let secrets = [("A", "aaab")];
        assert_eq!(
            masked_in_chunks(&secrets, &["aa", "aa", "ab"]).0,
            "aa[secret:A]"
        );
    }

    #[test]
    fn no_secrets_pass_everything_through() {
        let mut masker = Masker::new(Vec::<(&str, &str)>::new());
        assert!(masker.is_empty());
        let mut out = Vec::new();
        masker.push(b"anything", &mut out);
        assert_eq!(out, b"anything");
    }

    /// Secrets from characters that the marker (`[secret:` + upper-case name + `]`) does not use,
    /// so a marker next to output can never form a secret.
    fn secret_set() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec("[abd01]{1,7}", 1..5).prop_map(|values| {
            values
                .into_iter()
                .enumerate()
                .map(|(i, value)| (format!("S{}", char::from(b'A' + i as u8)), value))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn masking_in_chunks_equals_masking_the_whole_and_leaves_no_secret(
            secrets in secret_set(),
            text in "[abd01x\n]{0,80}",
            cuts in proptest::collection::vec(0usize..81, 0..12),
        ) {
            let pairs: Vec<(&str, &str)> =
                secrets.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let whole = mask_all(pairs.iter().copied(), text.as_bytes());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort_unstable();
            let mut chunks = vec![];
            let mut from = 0;
            for cut in cuts {
                chunks.push(&text[from..cut]);
                from = cut;
            }
            chunks.push(&text[from..]);
            let (chunked, _) = masked_in_chunks(&pairs, &chunks);
            prop_assert_eq!(chunked.as_bytes(), &whole[..]);
            for (_, value) in &secrets {
                prop_assert!(!chunked.contains(value.as_str()), "{} in {:?}", value, chunked);
            }
        }

        #[test]
        fn what_is_held_back_is_always_a_proper_prefix_of_a_secret(
            secrets in secret_set(),
            chunks in proptest::collection::vec("[abd01x]{0,10}", 1..8),
        ) {
            let mut masker = Masker::new(secrets.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let mut out = Vec::new();
            for chunk in &chunks {
                masker.push(chunk.as_bytes(), &mut out);
                let held = masker.held.clone();
                prop_assert!(
                    held.is_empty()
                        || secrets.iter().any(|(_, v)| v.len() > held.len() && v.as_bytes().starts_with(&held))
                );
            }
        }
    }
}
