//! C2SP signed notes with Ed25519 (the golang.org/x/mod/sumdb/note format) and the tlog-checkpoint
//! body they carry here: origin, tree size, root hash and a `time_ms` extension line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::digest::{Hash, sha256, to_hex};

/// The signed-note algorithm byte for Ed25519.
const ALG_ED25519: u8 = 0x01;
/// The signature line's prefix: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The prefix of the private key text, as sumdb's `note.NewSigner` reads it.
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";
/// The extension line that carries the checkpoint's time.
const TIME_EXTENSION: &str = "time_ms ";

/// A key name is non-empty and has no whitespace and no `+` (which separates the key text's fields).
pub(crate) fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).
fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let hash = sha256(&[name.as_bytes(), b"\n", &[ALG_ED25519], public_key]);
    [hash[0], hash[1], hash[2], hash[3]]
}

/// An Ed25519 note signer under a key name.
pub(crate) struct NoteSigner {
    name: String,
    key: SigningKey,
    key_id: [u8; 4],
}

impl NoteSigner {
    pub(crate) fn from_seed(name: &str, seed: &[u8; 32]) -> NoteSigner {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        NoteSigner {
            name: name.to_owned(),
            key,
            key_id,
        }
    }

    /// Reads `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`.
    pub(crate) fn parse(text: &str) -> Result<NoteSigner, String> {
        let rest = text
            .trim_end()
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or("it does not start with PRIVATE+KEY+")?;
        let (name, id_hex, seed) = split_key_text(rest)?;
        let bytes = BASE64.decode(seed).map_err(|_| "the key is not base64")?;
        let seed: [u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, seed)) => seed
                .try_into()
                .map_err(|_| "the Ed25519 seed is not 32 bytes")?,
            _ => return Err("the key is not an Ed25519 key".into()),
        };
        let signer = NoteSigner::from_seed(name, &seed);
        if to_hex(&signer.key_id) != id_hex {
            return Err("the key id does not match the key".into());
        }
        Ok(signer)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The private key text [`NoteSigner::parse`] reads back.
    pub(crate) fn private_key_text(&self) -> String {
        let mut seed = vec![ALG_ED25519];
        seed.extend_from_slice(self.key.as_bytes());
        format!(
            "{PRIVATE_KEY_PREFIX}{}+{}+{}\n",
            self.name,
            to_hex(&self.key_id),
            BASE64.encode(seed)
        )
    }

    /// `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
    pub(crate) fn verifier_key(&self) -> String {
        let mut public = vec![ALG_ED25519];
        public.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            to_hex(&self.key_id),
            BASE64.encode(public)
        )
    }

    /// The signed note: `text` (which ends in a newline), a blank line, and one signature line.
    pub(crate) fn sign(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(blob)
        )
    }
}

fn split_key_text(text: &str) -> Result<(&str, &str, &str), String> {
    // The base64 key may itself contain `+`.
    let mut fields = text.splitn(3, '+');
    match (fields.next(), fields.next(), fields.next()) {
        (Some(name), Some(id), Some(key)) if valid_key_name(name) && id.len() == 8 => {
            Ok((name, id, key))
        }
        _ => Err("it is not <name>+<8 hex digits>+<base64 key>".into()),
    }
}

/// A parsed verifier key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Reads `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<NoteVerifier, String> {
        let (name, id_hex, key) = split_key_text(text.trim_end())?;
        let bytes = BASE64.decode(key).map_err(|_| "the key is not base64")?;
        let public: [u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, public)) => public
                .try_into()
                .map_err(|_| "the Ed25519 key is not 32 bytes")?,
            _ => return Err("the key is not an Ed25519 key".into()),
        };
        let key_id = key_id(name, &public);
        if to_hex(&key_id) != id_hex {
            return Err("the key id does not match the key".into());
        }
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| "the key is not a valid Ed25519 point")?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// The note's text, if the note is well-formed and carries a valid signature by this key.
    /// Signatures by other keys are ignored, as the signed-note spec requires.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, String> {
        let split = note
            .rfind("\n\n")
            .ok_or("the note has no blank line before its signatures")?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err("the note text contains control characters".into());
        }
        if signatures.is_empty() || !signatures.ends_with('\n') {
            return Err("the note's signature lines do not end with a newline".into());
        }
        let mut found = false;
        for line in signatures.lines() {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or("a line after the blank line is not a signature")?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or("a signature line has no space after the key name")?;
            let blob = BASE64
                .decode(blob)
                .map_err(|_| "a signature is not base64")?;
            if !valid_key_name(name) || blob.len() < 5 {
                return Err("a signature line is malformed".into());
            }
            if name != self.name || blob[..4] != self.key_id {
                continue;
            }
            let signature =
                Signature::from_slice(&blob[4..]).map_err(|_| "the signature is not 64 bytes")?;
            if self.key.verify_strict(text.as_bytes(), &signature).is_err() {
                return Err(format!(
                    "the signature by {}+{} is invalid",
                    self.name,
                    to_hex(&self.key_id)
                ));
            }
            found = true;
        }
        if found {
            Ok(text)
        } else {
            Err(format!(
                "the note has no signature by {}+{}",
                self.name,
                to_hex(&self.key_id)
            ))
        }
    }
}

/// A signed tree head: the log's size, root hash and time, under its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    /// Entries covered: seq 0 up to `size - 1`.
    pub size: u64,
    /// RFC 6962 tree hash of those entries.
    pub root: Hash,
    /// When it was signed, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\ntime_ms <ms>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n{TIME_EXTENSION}{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root),
            self.time_ms
        )
    }

    /// Reads a note text written by [`Checkpoint::body`]; other extension lines are ignored.
    pub fn parse_body(text: &str) -> Result<Checkpoint, String> {
        let mut lines = text
            .strip_suffix('\n')
            .ok_or("the checkpoint does not end with a newline")?
            .split('\n');
        let origin = lines
            .next()
            .filter(|line| !line.is_empty())
            .ok_or("the checkpoint has no origin line")?;
        let size = lines.next().ok_or("the checkpoint has no size line")?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(format!(
                "the size line {size:?} is not a decimal number without leading zeros"
            ));
        }
        let size = size
            .parse()
            .map_err(|_| format!("the size {size} is too large"))?;
        let root = lines.next().ok_or("the checkpoint has no root hash line")?;
        let root: Hash = BASE64
            .decode(root)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("the root hash line is not 32 bytes of base64")?;
        let mut time_ms = None;
        for line in lines {
            if line.is_empty() {
                return Err("the checkpoint has an empty extension line".into());
            }
            if let Some(value) = line.strip_prefix(TIME_EXTENSION) {
                time_ms = Some(
                    value
                        .parse()
                        .map_err(|_| format!("the time line {line:?} is not milliseconds"))?,
                );
            }
        }
        let time_ms = time_ms.ok_or("the checkpoint has no time_ms line")?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From golang.org/x/mod/sumdb/note's tests: Peter Neumann's key, and a note signed by it and
    // by a second key the verifier does not know.
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn a_known_note_verifies_with_its_known_key() {
        let verifier = NoteVerifier::parse(PETER_VKEY).unwrap();
        let note = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        assert_eq!(verifier.open(&note).unwrap(), TEXT);
        // Only the other key's signature: not verified.
        assert!(verifier.open(&format!("{TEXT}\n{ENOCH_SIG}")).is_err());
        // A changed text or signature fails.
        assert!(
            verifier
                .open(&format!(
                    "{}\n{PETER_SIG}",
                    TEXT.replace("answer", "Answer")
                ))
                .is_err()
        );
        let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert!(verifier.open(&bad).is_err());
        // Malformed notes.
        for bad in [
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", PETER_SIG.trim_end()),
            format!("\x01{TEXT}\n{PETER_SIG}"),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        ] {
            assert!(verifier.open(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_known_signer_reproduces_the_known_signature() {
        let signer = NoteSigner::parse(PETER_SKEY).unwrap();
        assert_eq!(signer.verifier_key(), PETER_VKEY);
        assert_eq!(signer.sign(TEXT), format!("{TEXT}\n{PETER_SIG}"));
        assert_eq!(
            NoteSigner::parse(&signer.private_key_text())
                .unwrap()
                .verifier_key(),
            PETER_VKEY
        );
    }

    #[test]
    fn mangled_verifier_keys_are_refused() {
        assert!(NoteVerifier::parse(PETER_VKEY).is_ok());
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
            "",
        ] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad}");
        }
        let bytes = PETER_VKEY.as_bytes();
        for i in 0..bytes.len() {
            let mut mangled = bytes.to_vec();
            mangled[i] = mangled[i].wrapping_add(1);
            if let Ok(text) = String::from_utf8(mangled) {
                assert!(NoteVerifier::parse(&text).is_err(), "{text}");
            }
        }
    }

    #[test]
    fn checkpoints_round_trip_through_a_signed_note() {
        let signer = NoteSigner::from_seed("celistra.test/audit", &[7; 32]);
        let checkpoint = Checkpoint {
            origin: "celistra.test/audit".into(),
            size: 42,
            root: [9; 32],
            time_ms: 1_750_000_000_123,
        };
        let note = signer.sign(&checkpoint.body());
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        assert_eq!(
            Checkpoint::parse_body(verifier.open(&note).unwrap()).unwrap(),
            checkpoint
        );
        let other = NoteSigner::from_seed("celistra.test/audit", &[8; 32]);
        assert!(
            NoteVerifier::parse(&other.verifier_key())
                .unwrap()
                .open(&note)
                .is_err()
        );
    }

    #[test]
    fn the_c2sp_example_body_parses_apart_from_its_missing_time() {
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(
            Checkpoint::parse_body(body).unwrap_err(),
            "the checkpoint has no time_ms line"
        );
        let with_time = format!("{body}time_ms 5\n");
        assert_eq!(Checkpoint::parse_body(&with_time).unwrap().size, 20852163);
        for bad in [
            "o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\ntime_ms 5\n",
            "o\n1\nAAAA\ntime_ms 5\n",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\ntime_ms 5\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }
}
