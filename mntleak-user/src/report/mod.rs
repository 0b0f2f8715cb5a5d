//! Rendering: one line (or one JSON object) per event, lost-event notices, the summary, and the
//! findings. Live and replay use only these renderers, so a replay prints what the live run printed.

pub mod escape;
pub mod event;
pub mod finding;
pub mod names;
