//! The machine's time zone, for schedules and usage-limit resets that name none: `TZ`, else the
//! target of `/etc/localtime`, else `/etc/timezone`, else UTC. Read once.

use std::sync::OnceLock;

use celistra_core::schedule::Tz;

/// The machine's IANA time zone.
pub(crate) fn machine_zone() -> Tz {
    static ZONE: OnceLock<Tz> = OnceLock::new();
    *ZONE.get_or_init(|| {
        let tz = std::env::var("TZ").ok();
        let link = std::fs::read_link("/etc/localtime")
            .ok()
            .map(|p| p.display().to_string());
        let file = std::fs::read_to_string("/etc/timezone").ok();
        match [tz, link, file]
            .into_iter()
            .flatten()
            .find_map(|n| zone_named(&n))
        {
            Some(zone) => zone,
            None => {
                tracing::warn!(
                    "cannot tell the machine's time zone (TZ, /etc/localtime, /etc/timezone); \
                     schedules without a time_zone use UTC"
                );
                Tz::UTC
            }
        }
    })
}

/// A zone from `TZ`'s forms (`Europe/Lisbon`, `:Europe/Lisbon`) or a path into a zoneinfo tree.
fn zone_named(text: &str) -> Option<Tz> {
    let text = text.trim().trim_start_matches(':');
    let name = text.rsplit_once("zoneinfo/").map_or(text, |(_, name)| name);
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_zones_are_named_in() {
        assert_eq!(zone_named("Europe/Lisbon"), Some(Tz::Europe__Lisbon));
        assert_eq!(
            zone_named(":America/New_York\n"),
            Some(Tz::America__New_York)
        );
        assert_eq!(
            zone_named("/usr/share/zoneinfo/Europe/Lisbon"),
            Some(Tz::Europe__Lisbon)
        );
        assert_eq!(zone_named("../usr/share/zoneinfo/UTC"), Some(Tz::UTC));
        assert_eq!(zone_named("EST5EDT,M3.2.0,M11.1.0"), None);
    }
}
