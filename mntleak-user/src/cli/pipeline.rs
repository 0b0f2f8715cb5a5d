//! One record stream → engine → printed events and findings. Live and replay both run exactly this,
//! so a replay prints what the live run printed.

use std::io::{self, Write};

use crate::engine::{Engine, EngineConfig, Finding};
use crate::model::{CaptureHeader, Record};
use crate::report;
use crate::report::event::Summary;

use super::Filter;

pub struct Pipeline<W: Write> {
    engine: Engine,
    filter: Filter,
    header: CaptureHeader,
    json: bool,
    quiet: bool,
    out: W,
    summary: Summary,
    leaks: usize,
}

/// What a finished run found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineOutcome {
    pub leaks: usize,
    pub at_risk: usize,
}

impl<W: Write> Pipeline<W> {
    pub fn new(header: CaptureHeader, filter: Filter, json: bool, quiet: bool, out: W) -> Self {
        let config = EngineConfig {
            focus: filter.focus().to_vec(),
            detach_on_unlink: true,
        };
        let mut summary = Summary::default();
        summary.not_traced = header.missing.clone();
        Self {
            engine: Engine::new(config),
            filter,
            header,
            json,
            quiet,
            out,
            summary,
            leaks: 0,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn wall(&self) -> impl Fn(u64) -> String + '_ {
        move |ts| report::event::format_wall(self.header.wall_ns(ts))
    }

    pub fn handle(&mut self, rec: &Record) -> io::Result<()> {
        self.summary.add(rec);
        match rec {
            Record::Event(ev) if !self.quiet && self.filter.matches(ev) => {
                let wall_ns = self.header.wall_ns(ev.task.ts_ns);
                if self.json {
                    writeln!(self.out, "{}", report::event::event_json(ev, wall_ns))?;
                } else {
                    writeln!(self.out, "{}", report::event::event_line(ev, wall_ns))?;
                }
            }
            Record::Lost {
                count,
                first_ts_ns,
                last_ts_ns,
            } => {
                let (first, last) = (
                    self.header.wall_ns(*first_ts_ns),
                    self.header.wall_ns(*last_ts_ns),
                );
                if self.json {
                    writeln!(
                        self.out,
                        "{}",
                        report::event::lost_json(*count, first, last)
                    )?;
                } else {
                    writeln!(
                        self.out,
                        "{}",
                        report::event::lost_line(*count, first, last)
                    )?;
                }
            }
            _ => {}
        }
        let findings = self.engine.apply(rec);
        for f in &findings {
            self.print_finding(f)?;
        }
        Ok(())
    }

    fn print_finding(&mut self, f: &Finding) -> io::Result<()> {
        let text = {
            let wall = self.wall();
            if self.json {
                report::finding::finding_json(f, &wall).to_string()
            } else {
                report::finding::finding_text(f, &wall)
            }
        };
        writeln!(self.out, "{text}")
    }

    /// End of stream: final verdicts and the summary.
    pub fn finish(&mut self) -> io::Result<PipelineOutcome> {
        let findings = self.engine.finish();
        let mut outcome = PipelineOutcome::default();
        if !self.json && !findings.is_empty() {
            writeln!(self.out, "== verdicts at the end of the trace")?;
        }
        for f in &findings {
            if f.is_leak() {
                outcome.leaks += 1;
            } else {
                outcome.at_risk += 1;
            }
            self.print_finding(f)?;
        }
        self.leaks = outcome.leaks;
        if !self.json {
            writeln!(
                self.out,
                "verdict: {} leak(s), {} mount(s) at risk",
                outcome.leaks, outcome.at_risk
            )?;
        }
        if self.json {
            writeln!(self.out, "{}", self.summary.render_json())?;
        } else {
            write!(self.out, "{}", self.summary.render_text())?;
        }
        self.out.flush()?;
        Ok(outcome)
    }
}
