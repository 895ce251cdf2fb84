//! A minimal pseudo-terminal runner (libc `openpty`): the child's stdin, stdout
//! and stderr are the terminal, so `leviathanctl` sees a person; the test reads
//! what it prints and types answers.

// openpty, fcntl and adopting the file descriptors it returns are `unsafe`
// (the crate denies `unsafe_code` elsewhere).
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Pty {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    /// Disconnected when the reader has read everything (the terminal closed).
    drained: mpsc::Receiver<()>,
}

fn cloexec(fd: i32) {
    // SAFETY: fd was just returned by openpty and is owned here.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

impl Pty {
    /// Spawns `cmd` on a new terminal.
    pub fn spawn(mut cmd: Command) -> Pty {
        let (mut m, mut s) = (0, 0);
        // SAFETY: out-pointers to two ints; null name, termios and window size.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        cloexec(m);
        cloexec(s);
        // SAFETY: both fds are open and owned by nobody else.
        let master = unsafe { File::from_raw_fd(m) };
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        let child = cmd.spawn().expect("spawn on the pty");
        drop(cmd); // closes our copies of the slave
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let out2 = output.clone();
        let (done, drained) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = done;
            let mut buf = [0u8; 4096];
            // Ends with EIO once every copy of the slave is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            output,
            drained,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `needle`.
    pub fn expect(&self, needle: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < until,
                "no {needle:?} on the terminal; it shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `s` at the terminal.
    pub fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Waits for the exit; returns (exit code, everything the terminal showed).
    pub fn finish(self) -> (i32, String) {
        let Pty {
            mut child,
            master,
            output,
            drained,
        } = self;
        let status = child.wait().unwrap();
        // The child's end of the terminal closed with it; ours goes now, and
        // the reader stops once it has read what is left.
        drop(master);
        let drained = drained.recv_timeout(Duration::from_secs(30));
        assert!(
            matches!(drained, Err(mpsc::RecvTimeoutError::Disconnected)),
            "the terminal's output was not drained within 30 s"
        );
        let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
        (status.code().expect("exited"), text)
    }
}
