//! Asking an operator to confirm a state change. The question goes to stderr and
//! the answer is read from stdin, so a prompt is only possible when stdin is a
//! terminal; callers refuse to proceed without one unless `--yes` was given.
//! Only `y` or `yes` (any case) confirms; anything else, or end of input, declines.

use super::error::CtlError;
use std::io::{BufRead, IsTerminal, Write};

/// Whether an operator can be asked (stdin is a terminal).
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal()
}

/// Shows `question` followed by ` [y/N] ` and reads one line.
pub fn ask(question: &str) -> Result<bool, CtlError> {
    let mut err = std::io::stderr().lock();
    write!(err, "{question} [y/N] ")
        .and_then(|_| err.flush())
        .map_err(|e| CtlError::local("writing the prompt to stderr", e))?;
    let mut answer = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CtlError::local("reading the answer from stdin", e))?;
    if n == 0 {
        // End of input: leave the prompt's line.
        let _ = writeln!(err);
    }
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    let a = answer.trim();
    a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_yes_confirms() {
        for a in ["y\n", "Y", " yes \n", "YES"] {
            assert!(super::is_yes(a), "{a:?}");
        }
        for a in ["", "\n", "n", "no", "yeah", "y es", "ja"] {
            assert!(!super::is_yes(a), "{a:?}");
        }
    }
}
