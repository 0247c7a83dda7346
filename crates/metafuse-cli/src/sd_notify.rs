//! systemd's readiness protocol (`Type=notify`): one datagram such as
//! `READY=1` to the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written `@name`). Without the variable nothing is sent.

use std::os::unix::net::UnixDatagram;

/// The states metafuse reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// The tree is served: mounted (`mount`) or answered by the API (`serve`).
    Ready,
    /// Shutting down: unmounting, stopping the API.
    Stopping,
}

impl ServiceState {
    fn message(self) -> &'static str {
        match self {
            ServiceState::Ready => "READY=1\nSTATUS=serving",
            ServiceState::Stopping => "STOPPING=1\nSTATUS=stopping",
        }
    }
}

/// Tells the service manager, if there is one. A failure is logged, never
/// fatal: systemd then times the start out, which says more than a crash.
pub fn notify_service_manager(state: ServiceState) {
    let Some(socket_name) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&socket_name, state.message()) {
        tracing::warn!(%error, socket = ?socket_name, "cannot notify the service manager");
    }
}

fn send(socket_name: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let name = socket_name.as_encoded_bytes();
    match name.strip_prefix(b"@") {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            socket.send_to_addr(message.as_bytes(), &address)?;
        }
        None => {
            socket.send_to(message.as_bytes(), socket_name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket() -> std::io::Result<()> {
        let directory = tempfile::tempdir()?;
        let path = directory.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path)?;
        send(path.as_os_str(), ServiceState::Ready.message())?;
        let mut buffer = [0_u8; 256];
        let length = listener.recv(&mut buffer)?;
        let text = String::from_utf8_lossy(&buffer[..length]);
        assert!(text.lines().any(|line| line == "READY=1"), "{text}");
        Ok(())
    }
}
