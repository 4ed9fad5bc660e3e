//! The signals an operator may send to an agent, by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// A signal an operator may send. `HUP` hangs up the agent's terminal; the others go to its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Hup,
    Int,
    Term,
    Quit,
    Kill,
}

impl Signal {
    pub const ALL: [Signal; 5] = [
        Signal::Hup,
        Signal::Int,
        Signal::Term,
        Signal::Quit,
        Signal::Kill,
    ];

    /// The conventional upper-case name without the `SIG` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Int => "INT",
            Signal::Term => "TERM",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
        }
    }

    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Term => 15,
        }
    }
}

/// Error for a signal name that is not one of [`Signal::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSignal(pub String);

impl fmt::Display for UnknownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown signal `{}`; use one of HUP, INT, TERM, QUIT, KILL",
            self.0
        )
    }
}

impl std::error::Error for UnknownSignal {}

impl FromStr for Signal {
    type Err = UnknownSignal;

    /// Accepts `TERM`, `SIGTERM`, `term` and the number `15` alike.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL
            .into_iter()
            .find(|s| s.name() == bare || s.number().to_string() == bare)
            .ok_or_else(|| UnknownSignal(text.to_owned()))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignalName;
        impl serde::de::Visitor<'_> for SignalName {
            type Value = Signal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name: HUP, INT, TERM, QUIT or KILL")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Signal, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(SignalName)
    }
}

/// In the schema, the names the daemon sends; it also accepts them in lower case, with a `SIG`
/// prefix, or as numbers, as a person would type them.
impl PartialSchema for Signal {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A signal an operator may send. `HUP` hangs up the agent's terminal; the others go to its process group.",
            ))
            .enum_values(Some(Signal::ALL.map(Signal::name)))
            .examples([serde_json::json!("TERM")])
            .into()
    }
}

impl ToSchema for Signal {}

/// Name of a signal number for display: `SIGSEGV` for 11, `signal 64` when unnamed.
pub fn signal_name(number: i32) -> String {
    const NAMES: [&str; 32] = [
        "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    match usize::try_from(number).ok().and_then(|n| NAMES.get(n)) {
        Some(name) if !name.is_empty() => format!("SIG{name}"),
        _ => format!("signal {number}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for text in ["TERM", "SIGTERM", "term", "15", " sigterm "] {
            assert_eq!(text.parse::<Signal>(), Ok(Signal::Term), "{text}");
        }
        assert_eq!("hup".parse::<Signal>(), Ok(Signal::Hup));
        let err = "USR1".parse::<Signal>().unwrap_err();
        assert!(err.to_string().contains("HUP, INT, TERM, QUIT, KILL"));
    }

    #[test]
    fn round_trips_through_json() {
        for s in Signal::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Signal>(&json).unwrap(), s);
        }
        assert!(serde_json::from_str::<Signal>("\"STOP\"").is_err());
    }

    #[test]
    fn names_signal_numbers() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(64), "signal 64");
    }
}
