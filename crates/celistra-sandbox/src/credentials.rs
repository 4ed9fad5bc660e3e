//! The user an agent runs as: uid, gid, supplementary groups, name and home, read from
//! `/etc/passwd` and `/etc/group` (no NSS: a root daemon must not load NSS modules for this).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Error;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// A user to run a child as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group included).
    pub groups: Vec<u32>,
    pub name: String,
    pub home: PathBuf,
}

impl Credentials {
    /// The user `user`, given by name or by numeric uid.
    pub fn lookup(user: &str) -> Result<Credentials, Error> {
        let passwd = read_database(PASSWD)?;
        let entry = match user.parse::<u32>() {
            Ok(uid) => find_passwd(&passwd, |e| e.uid == uid),
            Err(_) => find_passwd(&passwd, |e| e.name == user),
        }
        .ok_or_else(|| Error::UnknownUser {
            user: user.to_owned(),
        })?;
        Ok(entry.with_groups(&read_database(GROUP)?))
    }

    /// The owner of `path` (of its target, when it is a symlink).
    pub fn owner_of(path: &Path) -> Result<Credentials, Error> {
        let meta = fs::metadata(path).map_err(|source| Error::SandboxPath {
            path: path.display().to_string(),
            problem: format!("cannot read its owner: {source}"),
        })?;
        Credentials::lookup(&meta.uid().to_string())
    }

    /// The user this process runs as (effective ids). A uid without a passwd entry, as in some
    /// containers, is named by its number with `/` as home.
    pub fn current() -> Result<Credentials, Error> {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let groups = rustix::process::getgroups()
            .map_err(|e| Error::UserDatabase {
                path: "getgroups(2)".into(),
                source: e.into(),
            })?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let passwd = read_database(PASSWD)?;
        let (name, home) = match find_passwd(&passwd, |e| e.uid == uid) {
            Some(entry) => (entry.name.to_owned(), PathBuf::from(entry.home)),
            None => (uid.to_string(), PathBuf::from("/")),
        };
        Ok(Credentials {
            uid,
            gid,
            groups,
            name,
            home,
        })
    }
}

fn read_database(path: &str) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::UserDatabase {
        path: path.into(),
        source,
    })
}

/// One line of `/etc/passwd`: `name:password:uid:gid:gecos:home:shell`.
#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

impl PasswdEntry<'_> {
    /// The full credentials: the primary group and every group of `/etc/group` listing the user.
    fn with_groups(&self, group_file: &str) -> Credentials {
        let mut groups = vec![self.gid];
        groups.extend(
            group_file
                .lines()
                .filter_map(parse_group_line)
                .filter(|(_, members)| members.contains(&self.name))
                .map(|(gid, _)| gid),
        );
        groups.sort_unstable();
        groups.dedup();
        Credentials {
            uid: self.uid,
            gid: self.gid,
            groups,
            name: self.name.to_owned(),
            home: PathBuf::from(self.home),
        }
    }
}

fn find_passwd<'a>(
    passwd: &'a str,
    matches: impl Fn(&PasswdEntry<'a>) -> bool,
) -> Option<PasswdEntry<'a>> {
    passwd
        .lines()
        .filter_map(parse_passwd_line)
        .find(|e| matches(e))
}

/// Parses a passwd line; comments, blank and malformed lines (NIS `+` entries included) give `None`.
fn parse_passwd_line(line: &str) -> Option<PasswdEntry<'_>> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, uid, gid, _gecos, home, _shell] = fields[..] else {
        return None;
    };
    if name.is_empty() || name.starts_with(['#', '+', '-']) {
        return None;
    }
    Some(PasswdEntry {
        name,
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home,
    })
}

/// Parses a group line `name:password:gid:member,member` into its gid and members.
fn parse_group_line(line: &str) -> Option<(u32, Vec<&str>)> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, gid, members] = fields[..] else {
        return None;
    };
    if name.is_empty() || name.starts_with(['#', '+', '-']) {
        return None;
    }
    let members = members
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    Some((gid.parse().ok()?, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment

+nisuser::::::
broken:x:notanumber:1:x:/:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bob:x:1001:100::/srv/bob:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
users:x:100:alice
sudo:x:27:carol,alice
docker:x:998: bob , alice
alice:x:1000:
";

    #[test]
    fn passwd_lines_by_name_and_uid() {
        let alice = find_passwd(PASSWD, |e| e.name == "alice").unwrap();
        assert_eq!(
            alice,
            PasswdEntry {
                name: "alice",
                uid: 1000,
                gid: 1000,
                home: "/home/alice"
            }
        );
        assert_eq!(find_passwd(PASSWD, |e| e.uid == 1001).unwrap().name, "bob");
        assert!(find_passwd(PASSWD, |e| e.name == "broken").is_none());
        assert!(find_passwd(PASSWD, |e| e.name.starts_with('+')).is_none());
    }

    #[test]
    fn supplementary_groups_include_the_primary_one() {
        let alice = find_passwd(PASSWD, |e| e.name == "alice").unwrap();
        let creds = alice.with_groups(GROUP);
        assert_eq!(creds.groups, vec![27, 100, 998, 1000]);
        assert_eq!(creds.home, PathBuf::from("/home/alice"));
        let bob = find_passwd(PASSWD, |e| e.name == "bob").unwrap();
        assert_eq!(bob.with_groups(GROUP).groups, vec![100, 998]);
    }

    #[test]
    fn lookup_on_this_machine() {
        let root = Credentials::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(Credentials::lookup("0").unwrap(), root);
        assert!(matches!(
            Credentials::lookup("no-such-user-celistra"),
            Err(Error::UnknownUser { .. })
        ));
        assert_eq!(Credentials::owner_of(Path::new("/")).unwrap().uid, 0);
    }
}
