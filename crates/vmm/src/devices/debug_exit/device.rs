//! Debug-exit semantics: any one-byte write `v` means "stop with code `v`".

use crate::device_manager::GuestRequest;

/// The debug-exit port.
#[derive(Debug, Default, Clone, Copy)]
pub struct DebugExit;

impl DebugExit {
    /// The request a write of `data` makes; wider writes use the low byte.
    pub fn on_write(&self, data: &[u8]) -> Option<GuestRequest> {
        data.first().map(|code| GuestRequest::Exit(*code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_an_exit_request() {
        assert_eq!(DebugExit.on_write(&[3]), Some(GuestRequest::Exit(3)));
        assert_eq!(DebugExit.on_write(&[4, 0, 0, 0]), Some(GuestRequest::Exit(4)));
        assert_eq!(DebugExit.on_write(&[]), None);
    }
}
