//! The local terminal: its size, raw mode, and window-change signals.

pub use raw::RawMode;

/// The size of the terminal on stdin as (cols, rows), if it is one.
pub fn terminal_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

mod raw {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

    /// Raw mode for the local terminal, restored on drop.
    #[derive(Debug)]
    pub struct RawMode(Termios);

    impl RawMode {
        pub fn enable() -> Option<Self> {
            let stdin = std::io::stdin();
            let saved = tcgetattr(&stdin).ok()?;
            let mut raw = saved.clone();
            cfmakeraw(&mut raw);
            tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
            Some(Self(saved))
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
        }
    }
}

/// Waits for the next window-change signal (forever when none can be had).
pub async fn next_winch(winch: &mut Option<tokio::signal::unix::Signal>) {
    match winch.as_mut() {
        Some(w) => {
            if w.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// A stream of window-change signals, if they can be caught.
pub fn winch() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
}
