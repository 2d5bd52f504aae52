//! Who may use a control socket: the server's own user and root, plus the
//! members of one group when the node was started with `--control-group`.
//!
//! The kernel vouches for the peer (`SO_PEERCRED`: its uid, gid and pid at
//! connect time); supplementary groups are read from `/proc/PID/status`,
//! whose `Uid:` must still show the peer's uid (so a pid reused by another
//! user's process does not lend its groups).

use std::ffi::CString;

use tokio::net::unix::UCred;

/// Who, besides the server's user and root, may use its control sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Members of this group (by primary or supplementary group).
    pub group: Option<u32>,
}

/// `--control-group` named no group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No such group.
    #[error("--control-group {0}: no such group; create it (groupadd {0}) or name another")]
    Unknown(String),
    /// The group database could not be read.
    #[error("--control-group {name}: cannot look the group up: {source}")]
    Lookup {
        /// The group asked for.
        name: String,
        /// What failed.
        source: std::io::Error,
    },
}

impl Access {
    /// Access for the members of `group` (a name or a numeric gid), or the
    /// server's user only when `None`.
    pub fn for_group(group: Option<&str>) -> Result<Access, GroupError> {
        let Some(name) = group else {
            return Ok(Access::default());
        };
        if let Ok(gid) = name.parse::<u32>() {
            return Ok(Access { group: Some(gid) });
        }
        match gid_of(name) {
            Ok(Some(gid)) => Ok(Access { group: Some(gid) }),
            Ok(None) => Err(GroupError::Unknown(name.to_owned())),
            Err(source) => Err(GroupError::Lookup {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Whether the peer `cred` may use a socket served by user `me`.
    pub fn allows(&self, me: u32, cred: &UCred) -> bool {
        if cred.uid() == me || cred.uid() == 0 {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        cred.gid() == group
            || cred
                .pid()
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
                .is_some_and(|status| in_group(&status, cred.uid(), group))
    }

    /// The one-line refusal sent to a peer that may not use the socket.
    pub fn refusal(&self, me: u32, cred: Option<&UCred>) -> String {
        let who = match cred {
            Some(c) => format!("uid {} (gid {})", c.uid(), c.gid()),
            None => "a peer whose credentials cannot be read".to_owned(),
        };
        let owner = if me == 0 {
            "root".to_owned()
        } else {
            format!("uid {me} and root")
        };
        let allowed = match self.group {
            Some(g) => format!("{owner} and members of group {g}"),
            None => {
                format!("{owner} (start the node with --control-group GROUP to let a group in)")
            }
        };
        format!(
            "permission denied: {who} may not use this lanseed control socket; only {allowed} may"
        )
    }
}

/// Whether a `/proc/PID/status` text of a process running as `uid` lists
/// `group` among its supplementary groups.
fn in_group(status: &str, uid: u32, group: u32) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // Uid: real, effective, saved, filesystem.
    field("Uid:").get(1) == Some(&uid) && field("Groups:").contains(&group)
}

/// The gid of the group `name`, through the system's group database
/// (`/etc/group`, or LDAP and the like through NSS).
#[allow(unsafe_code)]
fn gid_of(name: &str) -> std::io::Result<Option<u32>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: `group` is plain old data (pointers and integers) for
        // which all zeroes is a valid value; getgrnam_r writes into it and
        // into `buf`, whose length it is given, and both outlive the call;
        // only `gr_gid` is read afterwards, a plain integer.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            // Some C libraries report "no such group" as one of these.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str =
        "Name:\tcat\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t100\t100\t100\nGroups:\t4 24 27 \n";

    #[test]
    fn supplementary_groups_count_only_for_the_uid_that_connected() {
        assert!(in_group(STATUS, 1001, 27));
        assert!(in_group(STATUS, 1001, 4));
        assert!(!in_group(STATUS, 1001, 100), "Gid: is not Groups:");
        assert!(!in_group(STATUS, 1001, 2));
        assert!(!in_group(STATUS, 1000, 27), "effective uid differs");
        assert!(!in_group("Uid:\t5\t5\t5\t5\nGroups:\n", 5, 0));
    }

    #[test]
    fn groups_resolve_by_name_or_number_and_unknown_ones_are_clear_errors() {
        assert_eq!(
            Access::for_group(Some("root")).unwrap(),
            Access { group: Some(0) }
        );
        assert_eq!(
            Access::for_group(Some("1234")).unwrap(),
            Access { group: Some(1234) }
        );
        assert_eq!(Access::for_group(None).unwrap(), Access::default());
        let err = Access::for_group(Some("no-such-group-lanseed")).unwrap_err();
        assert!(matches!(err, GroupError::Unknown(_)), "{err}");
        assert!(err.to_string().contains("no such group"), "{err}");
    }
}
