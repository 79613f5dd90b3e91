//! Chat templates rendered the way transformers' `apply_chat_template` renders them, inside
//! minijinja's sandbox.
//!
//! transformers compiles templates with `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True, extensions=[loopcontrols])`, adds `raise_exception` and `strftime_now`,
//! replaces `tojson` by `json.dumps(x, ensure_ascii=False, indent=..., separators=...,
//! sort_keys=...)`, and renders with `messages`, `tools`, `documents`, `add_generation_prompt`,
//! the tokenizer's special tokens (`bos_token`, `eos_token`, ...) and extra keyword arguments.
//! This module reproduces that: minijinja with the same whitespace rules, `pycompat` for
//! Python string/dict/list methods, a Python-exact `tojson`, Python's display of `True`, `False`,
//! `None` and containers, and transformers' `{% generation %}` tag accepted as a plain block.
//!
//! Sandbox: no loader (no `include`/`import` of other files), a fuel limit on executed
//! instructions, a recursion limit and a cap on the rendered size; renders in progress are
//! counted ([`renders`]) for a watchdog of the memory they take.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Output, State, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::tokenizer::{
    read_json_opt, read_limited, token_content, SpecialTokens, SPECIAL_TOKEN_NAMES,
};

/// Renders started and renders finished in this process. minijinja bounds a render's
/// instructions, recursion and output, not the memory its intermediate values take (`{% set
/// ns.s = ns.s ~ ns.s %}` in a loop doubles a string at each step): the `needle` binary's
/// watchdog reads these to watch the process's memory while one render runs long.
pub fn renders() -> (u64, u64) {
    (STARTED.load(Ordering::Relaxed), FINISHED.load(Ordering::Relaxed))
}

static STARTED: AtomicU64 = AtomicU64::new(0);
static FINISHED: AtomicU64 = AtomicU64::new(0);

/// One render counted in [`renders`] while it lives.
struct Rendering;

impl Rendering {
    fn start() -> Self {
        STARTED.fetch_add(1, Ordering::Relaxed);
        Rendering
    }
}

impl Drop for Rendering {
    fn drop(&mut self) {
        FINISHED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Largest template source accepted.
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;
/// Instructions one render may execute.
pub const RENDER_FUEL: u64 = 50_000_000;
/// Largest rendered output.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// Nesting of template calls/blocks.
const RECURSION_LIMIT: usize = 200;

/// What stands for the user's text when a template is cut at the start of the user turn.
const SENTINEL: &str = "\u{E000}needle-user-turn\u{E001}";

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    Io(#[from] crate::tokenizer::TokenizerError),
    #[error("no chat template found: {0}")]
    Missing(String),
    #[error("chat template of {0} bytes exceeds the limit of {MAX_TEMPLATE_BYTES}")]
    TooLarge(usize),
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
    #[error("chat template output exceeds {MAX_OUTPUT_BYTES} bytes")]
    OutputTooLarge,
    #[error("chat template did not render the user message, so the user turn cannot be located")]
    NoUserTurn,
}

/// One chat message as transformers passes it: `role`, `content` (a string, or a list of
/// content parts) and any other fields (`tool_calls`, `name`, `tool_call_id`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Json>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Json>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(Json::String(content.into())),
            extra: serde_json::Map::new(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Arguments of one render besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    /// JSON schemas of tools (`None` renders as Python `None`, as transformers passes it).
    pub tools: Option<Vec<Json>>,
    pub documents: Option<Vec<Json>>,
    /// Extra keyword arguments (`enable_thinking`, `date_string`, ...); they override the
    /// special-token variables.
    pub extra: serde_json::Map<String, Json>,
    /// Time `strftime_now` reports, as Unix seconds (UTC); `None`: the system clock.
    pub now_unix: Option<i64>,
}

/// A chat template plus the variables transformers passes along with the messages.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    /// Special tokens (`bos_token`, ...) and `additional_special_tokens`, as template variables.
    variables: serde_json::Map<String, Json>,
    /// Instructions one render may execute.
    fuel: u64,
    /// Time `strftime_now` reports when a render's options name none ([`ChatTemplate::set_now`]).
    now_unix: Option<i64>,
}

fn check_size(source: &str) -> Result<(), ChatError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        Err(ChatError::TooLarge(source.len()))
    } else {
        Ok(())
    }
}

/// Picks a template from `tokenizer_config.json`'s `chat_template`: a string, or a list of
/// `{name, template}` from which `name` (or `default`) is taken.
pub fn template_from_config_value(v: &Json, name: Option<&str>) -> Result<String, ChatError> {
    match v {
        Json::String(s) if name.is_none() || name == Some("default") => Ok(s.clone()),
        Json::String(_) => Err(ChatError::Missing(format!(
            "template `{}` requested but only a default one exists",
            name.unwrap_or_default()
        ))),
        Json::Array(list) => {
            let want = name.unwrap_or("default");
            list.iter()
                .find(|e| e.get("name").and_then(Json::as_str) == Some(want))
                .and_then(|e| e.get("template").and_then(Json::as_str))
                .map(str::to_owned)
                .ok_or_else(|| ChatError::Missing(format!("no template named `{want}`")))
        }
        _ => Err(ChatError::Missing(
            "`chat_template` is neither a string nor a list".into(),
        )),
    }
}

impl ChatTemplate {
    /// A template from source, with no special-token variables.
    pub fn new(source: impl Into<String>) -> Result<Self, ChatError> {
        let source = source.into();
        check_size(&source)?;
        let t = Self {
            source,
            variables: serde_json::Map::new(),
            fuel: RENDER_FUEL,
            now_unix: None,
        };
        // Compile once now so syntax errors surface at load time.
        let source = neutralize_generation_tags(&t.source);
        t.environment(None)?
            .template_from_named_str("chat_template", &source)
            .map_err(|e| ChatError::Syntax(format!("{e:#}")))?;
        Ok(t)
    }

    /// The template of a model folder: `chat_template.jinja`, else `chat_template.json`, else
    /// `tokenizer_config.json`'s `chat_template`; `name` selects one of several named templates
    /// (`None`: the default). Special tokens come from `tokenizer_config.json`.
    pub fn from_folder(dir: impl AsRef<Path>, name: Option<&str>) -> Result<Self, ChatError> {
        let dir = dir.as_ref();
        let tcfg = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let jinja = dir.join("chat_template.jinja");
        let source = if (name.is_none() || name == Some("default")) && jinja.is_file() {
            read_source(&jinja)?
        } else if let Some(ct) = read_json_opt(&dir.join("chat_template.json"))?
            .as_ref()
            .and_then(|j| j.get("chat_template"))
        {
            template_from_config_value(ct, name)?
        } else if let Some(ct) = tcfg.as_ref().and_then(|t| t.get("chat_template")) {
            template_from_config_value(ct, name)?
        } else {
            return Err(ChatError::Missing(dir.display().to_string()));
        };
        let mut t = Self::new(source)?;
        if let Some(cfg) = tcfg.as_ref() {
            t.set_specials_from_tokenizer_config(cfg);
        }
        Ok(t)
    }

    /// A template from a Jinja file (`--chat-template`), with no special-token variables;
    /// its size is checked before it is read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ChatError> {
        Self::new(read_source(path.as_ref())?)
    }

    /// The template in GGUF metadata: `tokenizer.chat_template`, or
    /// `tokenizer.chat_template.<name>`; special tokens from the GGUF vocabulary.
    pub fn from_gguf_metadata(
        meta: &HashMap<String, candle_core::quantized::gguf_file::Value>,
        name: Option<&str>,
    ) -> Result<Self, ChatError> {
        use candle_core::quantized::gguf_file::Value as G;
        let key = match name {
            None | Some("default") => "tokenizer.chat_template".to_owned(),
            Some(n) => format!("tokenizer.chat_template.{n}"),
        };
        let Some(G::String(source)) = meta.get(&key) else {
            return Err(ChatError::Missing(format!("GGUF has no `{key}`")));
        };
        let mut t = Self::new(source.clone())?;
        let tokens = match meta.get("tokenizer.ggml.tokens") {
            Some(G::Array(a)) => a.as_slice(),
            _ => &[],
        };
        for (var, key) in [
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
            ("unk_token", "tokenizer.ggml.unknown_token_id"),
            ("pad_token", "tokenizer.ggml.padding_token_id"),
        ] {
            let id = meta.get(key).and_then(|v| v.to_u32().ok());
            if let Some(G::String(tok)) = id.and_then(|i| tokens.get(i as usize)) {
                t.variables.insert(var.into(), Json::String(tok.clone()));
            }
        }
        Ok(t)
    }

    /// Sets the special-token variables from a parsed `tokenizer_config.json`.
    pub fn set_specials_from_tokenizer_config(&mut self, cfg: &Json) {
        for name in SPECIAL_TOKEN_NAMES {
            if let Some(v) = cfg.get(name).and_then(token_content) {
                self.variables.insert(name.into(), Json::String(v));
            }
        }
        if let Some(Json::Array(a)) = cfg.get("additional_special_tokens") {
            let list: Vec<Json> = a
                .iter()
                .filter_map(token_content)
                .map(Json::String)
                .collect();
            self.variables
                .insert("additional_special_tokens".into(), Json::Array(list));
        }
    }

    /// Sets the special-token variables from a tokenizer's special tokens.
    pub fn set_special_tokens(&mut self, special: &SpecialTokens) {
        for (k, v) in &special.named {
            self.variables.insert(k.clone(), Json::String(v.clone()));
        }
        if !special.additional.is_empty() {
            let list = special
                .additional
                .iter()
                .cloned()
                .map(Json::String)
                .collect();
            self.variables
                .insert("additional_special_tokens".into(), Json::Array(list));
        }
    }

    /// Limits the instructions one render may execute (default [`RENDER_FUEL`]).
    pub fn set_fuel(&mut self, fuel: u64) {
        self.fuel = fuel;
    }

    /// Pins the time `strftime_now` reports (Unix seconds, UTC) for every render whose options
    /// name none; `None`: the system clock at each render. Llama 3 templates print today's date
    /// into the system turn, so a scan pins it once to render every prompt alike (and to be
    /// reproducible).
    pub fn set_now(&mut self, now_unix: Option<i64>) {
        self.now_unix = now_unix;
    }

    /// Sets one extra template variable for every render.
    pub fn set_variable(&mut self, name: impl Into<String>, value: Json) {
        self.variables.insert(name.into(), value);
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn variables(&self) -> &serde_json::Map<String, Json> {
        &self.variables
    }

    fn environment<'s>(&self, now_unix: Option<i64>) -> Result<Environment<'s>, ChatError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(self.fuel));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", |msg: Value| -> Result<Value, Error> {
            let text = msg.as_str().map_or_else(|| msg.to_string(), str::to_owned);
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED_PREFIX}{text}"),
            ))
        });
        env.add_function(
            "strftime_now",
            move |fmt: String| -> Result<String, Error> {
                let now = now_unix.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
                });
                Ok(strftime(&fmt, now))
            },
        );
        env.add_filter("tojson", tojson_filter);
        Ok(env)
    }

    /// Renders `messages` as transformers' `apply_chat_template(..., tokenize=False)` does.
    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<String, ChatError> {
        let _counted = Rendering::start();
        let env = self.environment(opts.now_unix.or(self.now_unix))?;
        let source = neutralize_generation_tags(&self.source);
        let tmpl = env
            .template_from_named_str("chat_template", &source)
            .map_err(|e| ChatError::Syntax(format!("{e:#}")))?;
        let mut ctx = serde_json::Map::new();
        let msgs = serde_json::to_value(messages).map_err(|e| ChatError::Render(e.to_string()))?;
        ctx.insert("messages".into(), msgs);
        let opt_list = |v: &Option<Vec<Json>>| v.clone().map_or(Json::Null, Json::Array);
        ctx.insert("tools".into(), opt_list(&opts.tools));
        ctx.insert("documents".into(), opt_list(&opts.documents));
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(opts.add_generation_prompt),
        );
        for (k, v) in self.variables.iter().chain(opts.extra.iter()) {
            ctx.insert(k.clone(), v.clone());
        }
        let mut out = CappedWriter::default();
        match tmpl.render_captured_to(Value::from(minijinja::value::Serde(&ctx)), &mut out) {
            Ok(_) => {}
            Err(_) if out.overflow => return Err(ChatError::OutputTooLarge),
            Err(e) => {
                let detail = e.detail().unwrap_or_default();
                if let Some(msg) = detail.strip_prefix(RAISED_PREFIX) {
                    return Err(ChatError::Raised(msg.to_owned()));
                }
                return Err(ChatError::Render(format!("{e:#}")));
            }
        }
        String::from_utf8(out.buf).map_err(|_| ChatError::Render("output is not UTF-8".into()))
    }

    /// The rendered text that precedes the user's words in a conversation made of an optional
    /// system message and one user message: everything up to the start of the user content.
    pub fn prefix_before_user(&self, system: Option<&str>) -> Result<String, ChatError> {
        Ok(self.split_user_turn(system)?.0)
    }

    /// The rendered text around the user's words in a conversation made of an optional system
    /// message and one user message, with the generation prompt: `(prefix, suffix)` where the
    /// prompt for user text `u` is `prefix + u + suffix`.
    ///
    /// A template that refuses a system message (Gemma 2's raises "System role not supported")
    /// gets the system prompt at the head of the user's message instead, separated by a blank
    /// line: what Gemma 3's own template does with one, and how a deployment has to pass it.
    ///
    /// Rendered with `enable_thinking=false`: a template with that switch (Qwen3) then closes
    /// an empty reasoning block in the generation prompt, so the answer itself comes first
    /// (a scan reads the first answer tokens); templates without it ignore the variable.
    pub fn split_user_turn(&self, system: Option<&str>) -> Result<(String, String), ChatError> {
        let mut extra = serde_json::Map::new();
        extra.insert("enable_thinking".into(), Json::Bool(false));
        let opts = RenderOptions {
            add_generation_prompt: true,
            extra,
            ..RenderOptions::default()
        };
        let text = match system {
            None => self.render(&[Message::user(SENTINEL)], &opts)?,
            Some(s) => match self.render(&[Message::system(s), Message::user(SENTINEL)], &opts) {
                Err(ChatError::Raised(_)) => self.render(&[Message::user(format!("{s}\n\n{SENTINEL}"))], &opts)?,
                other => other?,
            },
        };
        let (pre, post) = text.split_once(SENTINEL).ok_or(ChatError::NoUserTurn)?;
        if post.contains(SENTINEL) {
            return Err(ChatError::NoUserTurn);
        }
        Ok((pre.to_owned(), post.to_owned()))
    }
}

/// A template file's source: at most [`MAX_TEMPLATE_BYTES`], UTF-8.
fn read_source(path: &Path) -> Result<String, ChatError> {
    let bytes = read_limited(path, MAX_TEMPLATE_BYTES as u64)?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    String::from_utf8(bytes).map_err(|_| ChatError::Syntax(format!("{name} is not UTF-8")))
}

/// Marks errors raised by the template's own `raise_exception`.
const RAISED_PREFIX: &str = "raise_exception: ";

#[derive(Default)]
struct CappedWriter {
    buf: Vec<u8>,
    overflow: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > MAX_OUTPUT_BYTES {
            self.overflow = true;
            return Err(std::io::Error::other("chat template output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// transformers' `{% generation %}...{% endgeneration %}` marks assistant text for masks; it
/// renders its body unchanged. Rewritten to `{% if true %}...{% endif %}` keeping whitespace
/// control markers, so minijinja parses it.
fn neutralize_generation_tags(src: &str) -> String {
    if !src.contains("generation") {
        return src.to_owned();
    }
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(pos) = rest.find("{%") {
        let (before, tag) = rest.split_at(pos);
        out.push_str(before);
        let mut i = 2;
        let bytes = tag.as_bytes();
        if matches!(bytes.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        let word_end = tag.get(i..).map_or(i, |s| {
            i + s
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(s.len())
        });
        let word = tag.get(i..word_end).unwrap_or("");
        let replacement = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str(tag.get(..i).unwrap_or(""));
                out.push_str(r);
                rest = tag.get(word_end..).unwrap_or("");
            }
            None => {
                out.push_str("{%");
                rest = tag.get(2..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

/// Jinja2's display of values: `True`/`False`/`None` and Python reprs of containers.
fn python_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map | ValueKind::Number => {
            let mut s = String::new();
            python_repr(value, &mut s, 0)?;
            out.write_str(&s).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

const MAX_REPR_DEPTH: usize = 64;

fn python_repr(value: &Value, out: &mut String, depth: usize) -> Result<(), Error> {
    if depth > MAX_REPR_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "value nested too deeply",
        ));
    }
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone()).unwrap_or(f64::NAN);
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let q = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            out.push(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&key, out, depth + 1)?;
                out.push_str(": ");
                python_repr(&value.get_item(&key)?, out, depth + 1)?;
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&item, out, depth + 1)?;
            }
            out.push(']');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
    Ok(())
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form outside 1e-4..1e16.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d.ddde[-]x`.
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mant) = mant.strip_prefix('-').map_or(("", mant), |m| ("-", m));
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let s = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let es = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{es}{:02}", exp.unsigned_abs())
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`.
fn tojson_filter(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(usize::try_from(n.clamp(0, 64)).unwrap_or(0))),
            None => Some(v.as_str().unwrap_or_default().chars().take(64).collect()),
        },
    };
    let (item_sep, key_sep) = match separators.filter(|s| !s.is_none()) {
        Some(s) => {
            let a = s.get_item_by_index(0)?;
            let b = s.get_item_by_index(1)?;
            (
                a.as_str().unwrap_or(",").to_owned(),
                b.as_str().unwrap_or(":").to_owned(),
            )
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    dump_json(&json, &style, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn dump_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn dump_json(v: &Json, st: &JsonStyle, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > MAX_REPR_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: output too large",
        ));
    }
    let newline = |out: &mut String, d: usize| {
        if let Some(ind) = &st.indent {
            out.push('\n');
            for _ in 0..d {
                out.push_str(ind);
            }
        }
    };
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if n.is_f64() {
                out.push_str(&python_float(n.as_f64().unwrap_or(f64::NAN)));
            } else {
                let _ = write!(out, "{n}");
            }
        }
        Json::String(s) => dump_str(s, st.ensure_ascii, out),
        Json::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(&st.item_sep);
                }
                newline(out, depth + 1);
                dump_json(x, st, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        Json::Object(m) => {
            if m.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            let mut entries: Vec<(&String, &Json)> = m.iter().collect();
            if st.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&st.item_sep);
                }
                newline(out, depth + 1);
                dump_str(k, st.ensure_ascii, out);
                out.push_str(&st.key_sep);
                dump_json(x, st, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
    }
    Ok(())
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds at 00:00 UTC of a `YYYY-MM-DD` date, or `None` for anything else (a month or
/// day out of range, a day the month does not have).
pub fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 || !s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates the month does not have (2026-02-30 would roll over into March).
    (civil_from_days(days) == (y, m, d)).then_some(days * 86_400)
}

/// Python's `datetime.now().strftime(fmt)` for the common directives, in UTC.
pub fn strftime(fmt: &str, unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let wd = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (index 3).
    let is_leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0u32, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum
        .get((m as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0)
        + d
        + u32::from(is_leap && m > 2);
    let month = MONTHS
        .get((m as usize).saturating_sub(1))
        .copied()
        .unwrap_or("");
    let weekday = WEEKDAYS.get(wd).copied().unwrap_or("");
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(code) = chars.next() else {
            out.push('%');
            break;
        };
        let h12 = if hh % 12 == 0 { 12 } else { hh % 12 };
        let _ = match code {
            'Y' => write!(out, "{y}"),
            'y' => write!(out, "{:02}", y.rem_euclid(100)),
            'm' => write!(out, "{m:02}"),
            'd' => write!(out, "{d:02}"),
            'e' => write!(out, "{d:2}"),
            'j' => write!(out, "{yday:03}"),
            'H' => write!(out, "{hh:02}"),
            'I' => write!(out, "{h12:02}"),
            'M' => write!(out, "{mm:02}"),
            'S' => write!(out, "{ss:02}"),
            'p' => write!(out, "{}", if hh < 12 { "AM" } else { "PM" }),
            'B' => write!(out, "{month}"),
            'b' | 'h' => write!(out, "{}", month.get(..3).unwrap_or(month)),
            'A' => write!(out, "{weekday}"),
            'a' => write!(out, "{}", weekday.get(..3).unwrap_or(weekday)),
            'F' => write!(out, "{y}-{m:02}-{d:02}"),
            'T' => write!(out, "{hh:02}:{mm:02}:{ss:02}"),
            'Z' => write!(out, "UTC"),
            'z' => write!(out, "+0000"),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_float_repr() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(123.456), "123.456");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(-2.5e-7), "-2.5e-07");
        assert_eq!(python_float(1234567890123456.0), "1234567890123456.0");
    }

    #[test]
    fn strftime_matches_python() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
        let t = 1_721_999_109;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %j %H:%M:%S %I%p %%", t),
            "Friday July 208 13:05:09 01PM %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
        assert_eq!(strftime("%F", -86_400), "1969-12-31");
    }

    #[test]
    fn a_date_parses_to_its_midnight_and_nothing_else_parses() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-07-26"), Some(1_721_952_000));
        assert_eq!(parse_date("2024-02-29").map(|t| strftime("%F", t)), Some("2024-02-29".into()));
        for bad in ["2023-02-29", "2026-13-01", "2026-00-10", "2026-04-31", "2026-4-01", "26-04-01", "2026-04-01T00", "", "2026/04/01", "+026-04-01"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_pinned_time_is_what_every_render_reports() {
        let mut t = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}|{{ messages[0].content }}").unwrap();
        t.set_now(parse_date("2031-01-02"));
        let (pre, _) = t.split_user_turn(None).unwrap();
        assert_eq!(pre, "02 Jan 2031|");
        // A render's own time still wins.
        let opts = RenderOptions { now_unix: Some(0), ..RenderOptions::default() };
        assert_eq!(t.render(&[Message::user("hi")], &opts).unwrap(), "01 Jan 1970|hi");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(sort_keys=true, separators=(',', ':')) }}",
        )
        .unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert(
            "x".into(),
            json!({"b": [1, 2.5, "é\n"], "a": {}, "c": null, "d": true}),
        );
        let out = t
            .render(
                &[],
                &RenderOptions {
                    extra,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, \"é\\n\"], \"a\": {}, \"c\": null, \"d\": true}|{\n  \"b\": [\n    1,\n    2.5,\n    \"é\\n\"\n  ],\n  \"a\": {},\n  \"c\": null,\n  \"d\": true\n}|{\"a\":{},\"b\":[1,2.5,\"é\\n\"],\"c\":null,\"d\":true}"
        );
    }

    #[test]
    fn python_display_of_values() {
        let t = ChatTemplate::new("{{ a }} {{ b }} {{ c }} {{ d }} {{ e }}").unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert("a".into(), json!(true));
        extra.insert("b".into(), json!(null));
        extra.insert("c".into(), json!(["x", 1, {"k": false}]));
        extra.insert("d".into(), json!("it's"));
        extra.insert("e".into(), json!(2.0));
        let out = t
            .render(
                &[],
                &RenderOptions {
                    extra,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(out, "True None ['x', 1, {'k': False}] it's 2.0");
    }

    #[test]
    fn raise_exception_and_limits() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").unwrap();
        match t.render(&[], &RenderOptions::default()) {
            Err(ChatError::Raised(m)) => assert_eq!(m, "no system role"),
            other => panic!("unexpected {other:?}"),
        }
        // Endless work runs out of fuel.
        let mut t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )
        .unwrap();
        t.set_fuel(200_000);
        match t.render(&[], &RenderOptions::default()) {
            Err(ChatError::Render(m)) => assert!(m.contains("fuel"), "{m}"),
            other => panic!("expected running out of fuel, got {other:?}"),
        }
        // Huge output is capped.
        let t =
            ChatTemplate::new("{% for i in range(20000) %}{{ 'x' * 1000 }}{% endfor %}").unwrap();
        assert!(matches!(
            t.render(&[], &RenderOptions::default()),
            Err(ChatError::OutputTooLarge)
        ));
        // No loader: includes fail.
        let t = ChatTemplate::new("{% include '/etc/passwd' %}").unwrap();
        assert!(t.render(&[], &RenderOptions::default()).is_err());
        assert!(matches!(
            ChatTemplate::new("{% if %}"),
            Err(ChatError::Syntax(_))
        ));
    }

    #[test]
    fn generation_tags_are_accepted() {
        let t = ChatTemplate::new("a{%- generation -%} b {%- endgeneration %}c").unwrap();
        assert_eq!(t.render(&[], &RenderOptions::default()).unwrap(), "abc");
        assert_eq!(
            neutralize_generation_tags("{{ generation }}"),
            "{{ generation }}"
        );
    }

    #[test]
    fn named_templates_from_config() {
        let v =
            json!([{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]);
        assert_eq!(template_from_config_value(&v, None).unwrap(), "D");
        assert_eq!(
            template_from_config_value(&v, Some("tool_use")).unwrap(),
            "T"
        );
        assert!(template_from_config_value(&v, Some("rag")).is_err());
        assert_eq!(template_from_config_value(&json!("S"), None).unwrap(), "S");
    }
}
