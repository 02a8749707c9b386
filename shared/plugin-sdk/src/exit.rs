//! How a plugin's exit status tells the runner whether trying again can help: the BSD
//! `sysexits.h` convention. A plugin exits 64, 65, 66, 77 or 78 for a failure no retry can
//! fix (wrong usage, bad data, missing input, no permission, bad config): the run fails at
//! once. Any other non-zero status (75 `EX_TEMPFAIL`, 74 `EX_IOERR`, 1, …) may pass on
//! another attempt: the run is retried under its pipeline's retry policy.

use std::io;

/// The class of a plugin failure, carried by its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// 64 `EX_USAGE`: the command line is wrong. Permanent.
    Usage,
    /// 65 `EX_DATAERR`: the input data is malformed. Permanent.
    Data,
    /// 66 `EX_NOINPUT`: an input file does not exist or cannot be read. Permanent.
    NoInput,
    /// 74 `EX_IOERR`: reading or writing failed. Retryable.
    Io,
    /// 75 `EX_TEMPFAIL`: a temporary failure (a source briefly down). Retryable.
    TempFail,
    /// 77 `EX_NOPERM`: not allowed (a path outside the granted directories). Permanent.
    NoPermission,
    /// 78 `EX_CONFIG`: the config is invalid. Permanent.
    Config,
    /// 1: any other failure. Retryable.
    Other,
}

impl FailureKind {
    /// Every kind, for tables and tests.
    pub const ALL: [FailureKind; 8] = [
        Self::Usage,
        Self::Data,
        Self::NoInput,
        Self::Io,
        Self::TempFail,
        Self::NoPermission,
        Self::Config,
        Self::Other,
    ];

    /// The exit status a plugin ends with for this kind.
    pub fn exit_status(self) -> u8 {
        match self {
            Self::Usage => 64,
            Self::Data => 65,
            Self::NoInput => 66,
            Self::Io => 74,
            Self::TempFail => 75,
            Self::NoPermission => 77,
            Self::Config => 78,
            Self::Other => 1,
        }
    }

    /// The kind an exit status stands for: `None` for 0 and for statuses outside the
    /// convention (which the runner treats as retryable, like [`FailureKind::Other`]).
    pub fn from_exit_status(status: i32) -> Option<FailureKind> {
        Self::ALL.into_iter().find(|k| i32::from(k.exit_status()) == status)
    }

    /// True when running the plugin again cannot succeed without someone changing
    /// something (the data, the config, the grants): the run is not retried.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Self::Usage | Self::Data | Self::NoInput | Self::NoPermission | Self::Config
        )
    }

    /// A few words for the status, as in `exited with status 66 (no input)`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Usage => "usage error",
            Self::Data => "data error",
            Self::NoInput => "no input",
            Self::Io => "I/O error",
            Self::TempFail => "temporary failure",
            Self::NoPermission => "permission denied",
            Self::Config => "config error",
            Self::Other => "failure",
        }
    }

    /// The kind of an I/O error opening or reading an input: a missing file is
    /// [`FailureKind::NoInput`]; a refused one, or one outside every granted directory
    /// (WASI finds no pre-opened directory for it), [`FailureKind::NoPermission`]; text that
    /// is not UTF-8 [`FailureKind::Data`]; anything else [`FailureKind::Io`].
    pub fn of_io(error: &io::Error) -> FailureKind {
        match error.kind() {
            io::ErrorKind::NotFound => Self::NoInput,
            io::ErrorKind::PermissionDenied => Self::NoPermission,
            io::ErrorKind::InvalidData => Self::Data,
            _ if outside_preopens(error) => Self::NoPermission,
            _ => Self::Io,
        }
    }
}

/// WASI's error for a path no granted (pre-opened) directory contains: Rust's standard
/// library reports it as an uncategorised error with this text, wasi-libc as `ENOTCAPABLE`.
fn outside_preopens(error: &io::Error) -> bool {
    /// `ENOTCAPABLE` in wasi-libc.
    const ENOTCAPABLE: i32 = 76;
    (cfg!(target_os = "wasi") && error.raw_os_error() == Some(ENOTCAPABLE))
        || error.to_string().contains("pre-opened file descriptor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_sysexits_and_round_trip() {
        let statuses: Vec<u8> = FailureKind::ALL.iter().map(|k| k.exit_status()).collect();
        assert_eq!(statuses, [64, 65, 66, 74, 75, 77, 78, 1]);
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::from_exit_status(i32::from(kind.exit_status())), Some(kind));
        }
        assert_eq!(FailureKind::from_exit_status(0), None);
        assert_eq!(FailureKind::from_exit_status(3), None);
    }

    #[test]
    fn only_usage_data_input_permission_and_config_are_permanent() {
        let permanent: Vec<u8> = FailureKind::ALL
            .iter()
            .filter(|k| k.is_permanent())
            .map(|k| k.exit_status())
            .collect();
        assert_eq!(permanent, [64, 65, 66, 77, 78]);
    }

    #[test]
    fn io_errors_are_classified_by_what_a_retry_could_change() {
        let kind = |e: io::Error| FailureKind::of_io(&e);
        assert_eq!(kind(io::Error::from(io::ErrorKind::NotFound)), FailureKind::NoInput);
        assert_eq!(
            kind(io::Error::from(io::ErrorKind::PermissionDenied)),
            FailureKind::NoPermission
        );
        assert_eq!(
            kind(io::Error::other(
                "failed to find a pre-opened file descriptor through which \"/etc/x\" could be opened"
            )),
            FailureKind::NoPermission
        );
        assert_eq!(kind(io::Error::from(io::ErrorKind::InvalidData)), FailureKind::Data);
        assert_eq!(kind(io::Error::from(io::ErrorKind::BrokenPipe)), FailureKind::Io);
    }
}
