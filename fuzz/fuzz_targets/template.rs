#![no_main]
//! Chat-template checks on arbitrary text: parse, AST walk, sandboxed renders. Must never panic
//! or run away (fuel, recursion and output caps bound every render).
use libfuzzer_sys::fuzz_target;
use needle_artifact::{template, Sink};

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        let mut sink = Sink::default();
        template::check(src, "chat_template.jinja", "chat_template", &mut sink);
        let _ = template::facts("chat_template.jinja", "chat_template", src);
    }
});
