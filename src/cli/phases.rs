//! Where the wall time of `flashdmoe run` goes: each host phase (weights, inputs, build,
//! forwards, verification, ...) is timed, shown as a spinner on stderr while it runs (only
//! when stderr is a terminal, so piped output and the tests see nothing of it), wrapped in an
//! NVTX range for profilers, and summed up in one `phases:` line.

use std::ffi::CStr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The phases run so far, in order, with their wall times.
#[derive(Debug)]
pub(super) struct Phases {
    start: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    /// No phase yet; the total counts from now.
    pub(super) fn start() -> Phases {
        Phases { start: Instant::now(), done: Vec::new() }
    }

    /// Runs `f` as the phase `name` (an NVTX range of that name, a spinner saying what runs)
    /// and records its wall time under `name`. Running a phase of the same name again adds to
    /// its time.
    pub(super) fn run<T>(&mut self, name: &'static CStr, f: impl FnOnce(&ProgressBar) -> T) -> T {
        let label = name.to_str().unwrap_or("phase");
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .expect("the template is valid"),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        let begin = Instant::now();
        let result = {
            let _range = nvtx::LocalRange::new(name);
            f(&bar)
        };
        bar.finish_and_clear();
        self.add(label, begin.elapsed());
        result
    }

    fn add(&mut self, label: &'static str, elapsed: Duration) {
        match self.done.iter_mut().find(|(l, _)| *l == label) {
            Some((_, total)) => *total += elapsed,
            None => self.done.push((label, elapsed)),
        }
    }

    /// `phases: weights 1.234 s, inputs 0.001 s, ...; total 2.345 s wall`: every phase run so
    /// far, and the wall time since [`Phases::start`] (which includes the printing between
    /// phases).
    pub(super) fn line(&self) -> String {
        let parts: Vec<String> =
            self.done.iter().map(|(label, d)| format!("{label} {}", secs(*d))).collect();
        format!("phases: {}; total {} wall", parts.join(", "), secs(self.start.elapsed()))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_listed_in_order_and_repeats_add_up() {
        let mut p = Phases::start();
        let v = p.run(c"weights", |_| 7);
        assert_eq!(v, 7);
        p.add("forwards", Duration::from_millis(1500));
        p.add("verify", Duration::from_millis(250));
        p.add("forwards", Duration::from_millis(500));
        let line = p.line();
        assert!(line.starts_with("phases: weights 0.0"), "{line}");
        assert!(line.contains(", forwards 2.000 s, verify 0.250 s; total "), "{line}");
        assert!(line.ends_with(" s wall"), "{line}");
    }
}
