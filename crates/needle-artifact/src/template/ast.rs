//! Syntax-tree checks: what a template reaches (code execution) and what it branches on
//! (content triggers). Works on minijinja's AST (`unstable_machinery`), whose parser already
//! bounds nesting depth; our own recursion is bounded again by `MAX_DEPTH`.

use super::{Hit, CODE_EXECUTION, CONTENT_TRIGGER, SUSPICIOUS_ATTRIBUTE};
use minijinja::machinery::ast::{BinOpKind, CallArg, CompareOpKind, Expr, Stmt};
use minijinja::machinery::Span;
use needle_report::Severity;
use std::collections::{BTreeSet, HashMap, HashSet};

pub(crate) struct AstReport {
    pub hits: Vec<Hit>,
    /// String literals that message content is tested against (for confirmation renders).
    pub triggers: Vec<String>,
}

const MAX_DEPTH: usize = 400;
const MAX_TRIGGERS: usize = 8;
const MAX_FOLDED: usize = 256;

/// Attribute names that lead from any Python object to code execution or the interpreter.
const DANGEROUS_ATTRS: &[&str] = &[
    "mro", "os", "popen", "system", "subprocess", "eval", "exec", "execfile", "compile", "builtins",
    "import_module", "importlib", "check_output", "check_call", "getoutput", "spawnv", "spawnl",
    "execv", "execl", "execve", "globals", "locals", "getattr", "setattr", "func_globals",
    "func_code", "f_globals", "f_locals", "f_back", "f_builtins", "gi_frame", "gi_code",
    "cr_frame", "tb_frame", "co_code", "im_func", "modules", "load_module",
];
/// Functions that are code execution when called by name.
const DANGEROUS_CALLS: &[&str] = &[
    "eval", "exec", "execfile", "compile", "getattr", "setattr", "globals", "locals", "vars",
    "open", "breakpoint", "input", "__import__",
];
/// Variables that only an attack refers to.
const DANGEROUS_VARS: &[&str] = &["os", "subprocess", "sys", "builtins", "importlib", "__builtins__"];
/// Jinja/Flask globals whose attributes lead to Python internals (`lipsum.__globals__`).
const TEMPLATE_GLOBALS: &[&str] = &[
    "lipsum", "cycler", "joiner", "namespace", "range", "dict", "self", "config", "request",
    "url_for", "get_flashed_messages", "g", "session",
];
/// Message fields that hold what users and tools wrote.
const TEXT_FIELDS: &[&str] = &["content", "reasoning_content", "text", "thinking", "reasoning"];
/// Message fields that are structure, not text.
const STRUCT_FIELDS: &[&str] = &[
    "type", "role", "name", "id", "tool_call_id", "tool_calls", "image", "image_url", "url",
    "function", "arguments", "parameters",
];
/// String methods whose result is still the (tainted) string.
const STRING_METHODS: &[&str] = &[
    "lower", "upper", "strip", "lstrip", "rstrip", "replace", "split", "rsplit", "title",
    "capitalize", "casefold", "splitlines", "format", "removeprefix", "removesuffix",
];
/// Methods that test a string against a literal.
const TEST_METHODS: &[&str] =
    &["startswith", "endswith", "find", "rfind", "index", "rindex", "count", "search", "match", "fullmatch"];
/// Jinja tests that compare their operand with an argument.
const COMPARING_TESTS: &[&str] =
    &["eq", "equalto", "==", "ne", "!=", "in", "sameas", "startingwith", "endingwith", "containing", "match", "search"];

#[derive(PartialEq, Clone, Copy)]
enum Mode {
    Bind,
    Check,
}

struct Walker<'s> {
    src: &'s str,
    mode: Mode,
    depth: usize,
    changed: bool,
    hits: Vec<Hit>,
    seen: HashSet<(&'static str, u32, String)>,
    tainted: HashSet<String>,
    containers: HashSet<String>,
    strings: HashMap<String, String>,
    macros: HashMap<String, Vec<String>>,
    triggers: BTreeSet<String>,
}

pub(crate) fn analyse(tree: &Stmt, src: &str) -> AstReport {
    let mut w = Walker {
        src,
        mode: Mode::Bind,
        depth: 0,
        changed: false,
        hits: Vec::new(),
        seen: HashSet::new(),
        tainted: HashSet::new(),
        containers: ["messages".to_string()].into_iter().collect(),
        strings: HashMap::new(),
        macros: HashMap::new(),
        triggers: BTreeSet::new(),
    };
    // Bindings (taint, folded strings) to a fixpoint, then one checking pass.
    for _ in 0..6 {
        w.changed = false;
        w.stmt(tree);
        if !w.changed {
            break;
        }
    }
    w.mode = Mode::Check;
    w.stmt(tree);
    AstReport { hits: w.hits, triggers: w.triggers.into_iter().take(MAX_TRIGGERS).collect() }
}

fn is_dunder(s: &str) -> bool {
    s.len() > 2 && s.starts_with("__")
}

fn const_str<'a>(e: &'a Expr) -> Option<&'a str> {
    match e {
        Expr::Const(c) => c.value.as_str(),
        _ => None,
    }
}

/// A literal the template compares content with: markup (`</think>`, `[TOOL_CALLS]`,
/// punctuation) is structure; words are a trigger.
pub(crate) fn markup_like(lit: &str) -> bool {
    let t = lit.trim();
    !t.chars().any(char::is_alphanumeric)
        || (t.starts_with('<') && t.ends_with('>'))
        || (t.starts_with('[') && t.ends_with(']'))
        || t.contains("<|")
        || t.contains("|>")
}

impl<'s> Walker<'s> {
    fn excerpt(&self, span: Span) -> String {
        let (a, b) = (span.start_offset as usize, span.end_offset as usize);
        let s = self.src.get(a..b).unwrap_or("");
        let mut out: String = s.chars().take(160).collect();
        if s.chars().count() > 160 {
            out.push('…');
        }
        out
    }

    fn hit(&mut self, h: Hit) {
        if self.mode != Mode::Check {
            return;
        }
        let key = (h.rule.code, h.line.unwrap_or(0), h.message.clone());
        if self.seen.insert(key) {
            self.hits.push(h);
        }
    }

    fn at(&self, span: Span) -> Option<u32> {
        Some(u32::from(span.start_line))
    }

    // ---- statements ----

    fn stmts(&mut self, v: &[Stmt]) {
        for s in v {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        if self.depth > MAX_DEPTH {
            return;
        }
        self.depth += 1;
        match s {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr),
            Stmt::EmitRaw(_) | Stmt::Continue(_) | Stmt::Break(_) => {}
            Stmt::ForLoop(f) => {
                if self.mode == Mode::Bind {
                    let t = self.is_tainted(&f.iter);
                    let c = self.is_container(&f.iter);
                    for name in target_names(&f.target) {
                        if t {
                            self.bind_taint(name.clone());
                        }
                        if c {
                            self.bind_container(name);
                        }
                    }
                }
                self.expr(&f.iter);
                if let Some(fe) = &f.filter_expr {
                    self.expr(fe);
                }
                self.stmts(&f.body);
                self.stmts(&f.else_body);
            }
            Stmt::IfCond(c) => {
                self.expr(&c.expr);
                self.stmts(&c.true_body);
                self.stmts(&c.false_body);
            }
            Stmt::WithBlock(wb) => {
                for (t, e) in &wb.assignments {
                    self.assign(t, e);
                    self.expr(e);
                }
                self.stmts(&wb.body);
            }
            Stmt::Set(st) => {
                self.assign(&st.target, &st.expr);
                self.expr(&st.expr);
            }
            Stmt::SetBlock(sb) => {
                if let Some(f) = &sb.filter {
                    self.expr(f);
                }
                self.stmts(&sb.body);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.stmts(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.stmts(&f.body);
            }
            Stmt::Block(b) => self.stmts(&b.body),
            Stmt::Import(i) => {
                self.loads(&i.expr, s_span(s));
                self.expr(&i.expr);
            }
            Stmt::FromImport(i) => {
                self.loads(&i.expr, s_span(s));
                self.expr(&i.expr);
            }
            Stmt::Extends(e) => {
                self.loads(&e.name, s_span(s));
                self.expr(&e.name);
            }
            Stmt::Include(i) => {
                self.loads(&i.name, s_span(s));
                self.expr(&i.name);
            }
            Stmt::Macro(m) => {
                if self.mode == Mode::Bind && !self.macros.contains_key(m.name) {
                    let params = m.args.iter().flat_map(target_names).collect();
                    self.macros.insert(m.name.to_string(), params);
                }
                for d in &m.defaults {
                    self.expr(d);
                }
                self.stmts(&m.body);
            }
            Stmt::CallBlock(c) => {
                self.call(&c.call, c.call.span());
                self.stmts(&c.macro_decl.body);
            }
            Stmt::Do(d) => self.call(&d.call, d.call.span()),
        }
        self.depth -= 1;
    }

    fn loads(&mut self, name: &Expr, span: Option<Span>) {
        let what = const_str(name).unwrap_or("a computed name").to_string();
        let mut h = Hit::new(&CODE_EXECUTION, format!("the template loads another template ({what}); a server with a file loader would read local files"))
            .severity(Severity::High);
        if let Some(sp) = span {
            h = h.line(self.at(sp)).evidence(self.excerpt(sp));
        }
        self.hit(h);
    }

    fn assign(&mut self, target: &Expr, value: &Expr) {
        if self.mode == Mode::Bind {
            let t = self.is_tainted(value);
            let c = self.is_container(value);
            let folded = self.fold(value, 0);
            for name in target_names(target) {
                if t {
                    self.bind_taint(name.clone());
                }
                if c {
                    self.bind_container(name.clone());
                }
                if let Some(f) = &folded {
                    if let std::collections::hash_map::Entry::Vacant(e) = self.strings.entry(name) {
                        e.insert(f.clone());
                        self.changed = true;
                    }
                }
            }
        } else if !matches!(value, Expr::Const(_)) {
            if let Some(f) = self.fold(value, 0) {
                if is_dunder(&f) || (DANGEROUS_ATTRS.contains(&f.as_str()) && has_concat(value)) {
                    let sp = value.span();
                    self.hit(
                        Hit::new(&CODE_EXECUTION, format!("the template builds the name `{f}` from pieces"))
                            .line(self.at(sp))
                            .evidence(self.excerpt(sp)),
                    );
                }
            }
        }
    }

    fn bind_taint(&mut self, name: String) {
        if self.tainted.insert(name) {
            self.changed = true;
        }
    }

    fn bind_container(&mut self, name: String) {
        if self.containers.insert(name) {
            self.changed = true;
        }
    }

    // ---- expressions ----

    fn args(&mut self, args: &[CallArg]) {
        for a in args {
            match a {
                CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    fn expr(&mut self, e: &Expr) {
        if self.depth > MAX_DEPTH {
            return;
        }
        self.depth += 1;
        let span = e.span();
        match e {
            Expr::Var(v) => {
                if is_dunder(v.id) || DANGEROUS_VARS.contains(&v.id) {
                    self.hit(
                        Hit::new(&CODE_EXECUTION, format!("the template refers to `{}`", v.id))
                            .line(self.at(span))
                            .evidence(self.excerpt(span)),
                    );
                }
            }
            Expr::Const(c) => {
                if let Some(s) = c.value.as_str() {
                    if is_dunder(s) && s.ends_with("__") {
                        self.hit(
                            Hit::new(&SUSPICIOUS_ATTRIBUTE, format!("the template holds the Python internal name `{s}` as a string"))
                                .line(self.at(span))
                                .evidence(self.excerpt(span)),
                        );
                    }
                }
            }
            Expr::Slice(s) => {
                self.expr(&s.expr);
                for x in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(x);
                }
            }
            Expr::UnaryOp(u) => self.expr(&u.expr),
            Expr::BinOp(b) => {
                match b.op {
                    BinOpKind::In => self.pair_trigger(&b.left, CompareOpKind::In, &b.right, span),
                    BinOpKind::Eq => self.pair_trigger(&b.left, CompareOpKind::Eq, &b.right, span),
                    BinOpKind::Ne => self.pair_trigger(&b.left, CompareOpKind::Ne, &b.right, span),
                    _ => {}
                }
                self.expr(&b.left);
                self.expr(&b.right);
            }
            Expr::Compare(c) => {
                let mut left = &c.expr;
                for op in &c.ops {
                    self.pair_trigger(left, op.op, &op.expr, span);
                    left = &op.expr;
                }
                self.expr(&c.expr);
                for op in &c.ops {
                    self.expr(&op.expr);
                }
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                self.expr(&i.true_expr);
                if let Some(f) = &i.false_expr {
                    self.expr(f);
                }
            }
            Expr::Filter(f) => {
                self.filter_checks(f.name, f.expr.as_ref(), &f.args, span);
                if let Some(x) = &f.expr {
                    self.expr(x);
                }
                self.args(&f.args);
            }
            Expr::Test(t) => {
                if COMPARING_TESTS.contains(&t.name) && self.is_tainted(&t.expr) {
                    let lits: Vec<String> = t.args.iter().filter_map(pos_arg).flat_map(|a| self.literals(a)).collect();
                    self.trigger(lits, false, span);
                }
                self.expr(&t.expr);
                self.args(&t.args);
            }
            Expr::GetAttr(g) => {
                let receiver = match &g.expr {
                    Expr::Var(v) => Some(v.id),
                    _ => None,
                };
                self.name_check(g.name, &format!(".{}", g.name), receiver, span);
                self.expr(&g.expr);
            }
            Expr::GetItem(g) => {
                let receiver = match &g.expr {
                    Expr::Var(v) => Some(v.id),
                    _ => None,
                };
                if let Some(name) = self.fold(&g.subscript_expr, 0) {
                    self.name_check(&name, &format!("[{name:?}]"), receiver, span);
                    if has_concat(&g.subscript_expr) && (is_dunder(&name) || name.starts_with('_')) {
                        self.hit(
                            Hit::new(&CODE_EXECUTION, format!("the template builds the name `{name}` from pieces"))
                                .line(self.at(span))
                                .evidence(self.excerpt(span)),
                        );
                    }
                } else if !matches!(g.subscript_expr, Expr::Const(_)) {
                    let pieces = self.pieces(&g.subscript_expr);
                    if pieces.contains("__") {
                        self.hit(
                            Hit::new(&CODE_EXECUTION, "the template computes a dunder name for an item lookup")
                                .line(self.at(span))
                                .evidence(self.excerpt(span)),
                        );
                    }
                }
                self.expr(&g.expr);
                self.expr(&g.subscript_expr);
            }
            Expr::Call(c) => self.call(c, span),
            Expr::List(l) => {
                for x in &l.items {
                    self.expr(x);
                }
            }
            Expr::Tuple(t) => {
                for x in &t.items {
                    self.expr(x);
                }
            }
            Expr::Map(m) => {
                for x in m.keys.iter().chain(m.values.iter()) {
                    self.expr(x);
                }
            }
        }
        self.depth -= 1;
    }

    fn call(&mut self, c: &minijinja::machinery::ast::Call, span: Span) {
        match &c.expr {
            Expr::Var(v) => {
                if DANGEROUS_CALLS.contains(&v.id) {
                    self.hit(
                        Hit::new(&CODE_EXECUTION, format!("the template calls `{}`", v.id))
                            .line(self.at(span))
                            .evidence(self.excerpt(span)),
                    );
                }
                if self.mode == Mode::Bind {
                    if let Some(params) = self.macros.get(v.id).cloned() {
                        let any = c.args.iter().any(|a| match a {
                            CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => self.is_tainted(e),
                        });
                        if any {
                            for p in params {
                                self.bind_taint(p);
                            }
                        }
                    }
                }
            }
            Expr::GetAttr(g) if self.is_tainted(&g.expr) => {
                let first = c.args.first().and_then(pos_arg);
                if TEST_METHODS.contains(&g.name) {
                    let lits = first.map(|a| self.literals(a)).unwrap_or_default();
                    self.trigger(lits, false, span);
                } else if g.name == "replace" {
                    let lits = first.map(|a| self.literals(a)).unwrap_or_default();
                    self.trigger(lits, true, span);
                }
            }
            _ => {}
        }
        self.expr(&c.expr);
        self.args(&c.args);
    }

    fn filter_checks(&mut self, name: &str, operand: Option<&Expr>, args: &[CallArg], span: Span) {
        // Attribute names handed to filters are looked up like `.name`.
        let mut attr_names: Vec<(String, bool)> = Vec::new();
        for a in args {
            if let CallArg::Kwarg("attribute", e) = a {
                if let Some(s) = self.fold(e, 0) {
                    attr_names.push((s, has_concat(e)));
                }
            }
        }
        match name {
            "attr" => {
                if let Some(a) = args.first().and_then(pos_arg) {
                    match self.fold(a, 0) {
                        Some(s) => attr_names.push((s, has_concat(a))),
                        None => self.hit(
                            Hit::new(&SUSPICIOUS_ATTRIBUTE, "the template reads an attribute whose name is computed (`|attr`)")
                                .line(self.at(span))
                                .evidence(self.excerpt(span)),
                        ),
                    }
                }
            }
            "selectattr" | "rejectattr" | "groupby" | "map" | "sort" | "sum" | "unique" | "min" | "max" => {
                if let Some(a) = args.first().and_then(pos_arg) {
                    if let Some(s) = self.fold(a, 0) {
                        if name != "map" {
                            attr_names.push((s, has_concat(a)));
                        }
                    }
                }
            }
            _ => {}
        }
        for (n, built) in attr_names {
            self.name_check(&n, &format!("|{name}({n:?})"), None, span);
            if built && n.starts_with('_') {
                self.hit(
                    Hit::new(&CODE_EXECUTION, format!("the template builds the name `{n}` from pieces"))
                        .line(self.at(span))
                        .evidence(self.excerpt(span)),
                );
            }
        }
        // Content triggers through filters.
        if let Some(op) = operand {
            match name {
                "replace" if self.is_tainted(op) => {
                    let lits = args.first().and_then(pos_arg).map(|a| self.literals(a)).unwrap_or_default();
                    self.trigger(lits, true, span);
                }
                "selectattr" | "rejectattr" => {
                    let field = args.first().and_then(pos_arg).and_then(const_str);
                    if field.is_some_and(|f| TEXT_FIELDS.contains(&f)) {
                        let lits: Vec<String> = args.iter().skip(2).filter_map(pos_arg).flat_map(|a| self.literals(a)).collect();
                        self.trigger(lits, false, span);
                    }
                }
                "select" | "reject" if self.is_tainted(op) => {
                    let lits: Vec<String> = args.iter().skip(1).filter_map(pos_arg).flat_map(|a| self.literals(a)).collect();
                    self.trigger(lits, false, span);
                }
                _ => {}
            }
        }
    }

    fn name_check(&mut self, name: &str, how: &str, receiver: Option<&str>, span: Span) {
        let line = self.at(span);
        if is_dunder(name) || DANGEROUS_ATTRS.contains(&name) {
            self.hit(
                Hit::new(&CODE_EXECUTION, format!("the template accesses `{how}`, a way into Python internals"))
                    .line(line)
                    .evidence(self.excerpt(span)),
            );
        } else if name.starts_with('_') {
            self.hit(
                Hit::new(&SUSPICIOUS_ATTRIBUTE, format!("the template reads the private attribute `{how}`"))
                    .line(line)
                    .evidence(self.excerpt(span)),
            );
        } else if let Some(r) = receiver.filter(|r| TEMPLATE_GLOBALS.contains(r)) {
            if !self.tainted.contains(r) && !self.containers.contains(r) && !self.strings.contains_key(r) {
                self.hit(
                    Hit::new(&SUSPICIOUS_ATTRIBUTE, format!("the template reads `{how}` of the template global `{r}`"))
                        .line(line)
                        .evidence(self.excerpt(span)),
                );
            }
        }
    }

    fn pair_trigger(&mut self, left: &Expr, op: CompareOpKind, right: &Expr, span: Span) {
        if self.mode != Mode::Check {
            return;
        }
        let lits = match op {
            CompareOpKind::In | CompareOpKind::NotIn => {
                if self.is_tainted(right) {
                    self.literals(left)
                } else if self.is_tainted(left) {
                    self.literals(right)
                } else {
                    Vec::new()
                }
            }
            CompareOpKind::Eq | CompareOpKind::Ne => {
                if self.is_tainted(left) {
                    self.literals(right)
                } else if self.is_tainted(right) {
                    self.literals(left)
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        self.trigger(lits, false, span);
    }

    fn trigger(&mut self, lits: Vec<String>, rewrite: bool, span: Span) {
        if self.mode != Mode::Check {
            return;
        }
        for lit in lits {
            if lit.trim().is_empty() {
                continue;
            }
            let markup = markup_like(&lit);
            let msg = match (rewrite, markup) {
                (true, false) => format!("the template rewrites `{lit}` in message content"),
                (true, true) => format!("the template rewrites the markup `{lit}` in message content"),
                (false, false) => format!("the template branches on message content matching `{lit}`"),
                (false, true) => format!("the template branches on the markup `{lit}` in message content (usual for reasoning or tool markers)"),
            };
            let sev = if markup { Severity::Low } else { Severity::High };
            self.hit(Hit::new(&CONTENT_TRIGGER, msg).severity(sev).line(self.at(span)).evidence(self.excerpt(span)));
            if self.triggers.len() < MAX_TRIGGERS * 4 {
                self.triggers.insert(lit.chars().take(200).collect());
            }
        }
    }

    /// The string literals an expression stands for (a string, a list/tuple of strings).
    fn literals(&self, e: &Expr) -> Vec<String> {
        match e {
            Expr::List(l) => l.items.iter().filter_map(|x| self.fold(x, 0)).collect(),
            Expr::Tuple(t) => t.items.iter().filter_map(|x| self.fold(x, 0)).collect(),
            _ => self.fold(e, 0).into_iter().collect(),
        }
    }

    /// Constant-folds string expressions: literals, `~`/`+`, `join`, case and replace filters,
    /// variables bound to such values.
    fn fold(&self, e: &Expr, depth: usize) -> Option<String> {
        if depth > 32 {
            return None;
        }
        let s = match e {
            Expr::Const(c) => {
                if let Some(s) = c.value.as_str() {
                    s.to_string()
                } else if c.value.is_number() && depth > 0 {
                    c.value.to_string()
                } else {
                    return None;
                }
            }
            Expr::Var(v) => self.strings.get(v.id)?.clone(),
            Expr::GetAttr(g) => match &g.expr {
                Expr::Var(v) => self.strings.get(&format!("{}.{}", v.id, g.name))?.clone(),
                _ => return None,
            },
            Expr::BinOp(b) if matches!(b.op, BinOpKind::Concat | BinOpKind::Add) => {
                let mut l = self.fold(&b.left, depth + 1)?;
                l.push_str(&self.fold(&b.right, depth + 1)?);
                l
            }
            Expr::Filter(f) => {
                let operand = f.expr.as_ref()?;
                match f.name {
                    "join" => {
                        let sep = match f.args.first().and_then(pos_arg) {
                            Some(a) => self.fold(a, depth + 1)?,
                            None => String::new(),
                        };
                        let items: Option<Vec<String>> = match operand {
                            Expr::List(l) => l.items.iter().map(|x| self.fold(x, depth + 1)).collect(),
                            Expr::Tuple(t) => t.items.iter().map(|x| self.fold(x, depth + 1)).collect(),
                            _ => None,
                        };
                        items?.join(&sep)
                    }
                    "lower" => self.fold(operand, depth + 1)?.to_lowercase(),
                    "upper" => self.fold(operand, depth + 1)?.to_uppercase(),
                    "trim" => self.fold(operand, depth + 1)?.trim().to_string(),
                    "string" => self.fold(operand, depth + 1)?,
                    "reverse" => self.fold(operand, depth + 1)?.chars().rev().collect(),
                    "replace" => {
                        let base = self.fold(operand, depth + 1)?;
                        let from = self.fold(f.args.first().and_then(pos_arg)?, depth + 1)?;
                        let to = self.fold(f.args.get(1).and_then(pos_arg)?, depth + 1)?;
                        if from.is_empty() {
                            return None;
                        }
                        base.replace(&from, &to)
                    }
                    _ => return None,
                }
            }
            Expr::Call(c) => match &c.expr {
                Expr::GetAttr(g) => {
                    let base = self.fold(&g.expr, depth + 1)?;
                    match g.name {
                        "lower" => base.to_lowercase(),
                        "upper" => base.to_uppercase(),
                        "strip" => base.trim().to_string(),
                        "replace" => {
                            let from = self.fold(c.args.first().and_then(pos_arg)?, depth + 1)?;
                            let to = self.fold(c.args.get(1).and_then(pos_arg)?, depth + 1)?;
                            if from.is_empty() {
                                return None;
                            }
                            base.replace(&from, &to)
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            },
            _ => return None,
        };
        if s.len() > MAX_FOLDED {
            return None;
        }
        Some(s)
    }

    /// Every string constant under an expression, concatenated (for names built in ways
    /// [`fold`](Self::fold) cannot follow).
    fn pieces(&self, e: &Expr) -> String {
        let mut out = String::new();
        collect_consts(e, &mut out, 0);
        out
    }

    // ---- taint ----

    fn is_tainted(&self, e: &Expr) -> bool {
        self.tainted_at(e, 0)
    }

    fn tainted_at(&self, e: &Expr, depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        let d = depth + 1;
        match e {
            Expr::Var(v) => self.tainted.contains(v.id),
            Expr::GetAttr(g) => {
                if let Expr::Var(v) = &g.expr {
                    if self.tainted.contains(&format!("{}.{}", v.id, g.name)) {
                        return true;
                    }
                }
                self.field_taint(g.name, &g.expr, d)
            }
            Expr::GetItem(g) => match const_str(&g.subscript_expr) {
                Some(k) => self.field_taint(k, &g.expr, d),
                None => self.tainted_at(&g.expr, d),
            },
            Expr::Slice(s) => self.tainted_at(&s.expr, d),
            Expr::Filter(f) => {
                let operand = f.expr.as_ref();
                match f.name {
                    "map" => {
                        f.args.iter().any(|a| match a {
                            CallArg::Kwarg("attribute", e) => const_str(e).is_some_and(|s| TEXT_FIELDS.contains(&s)),
                            _ => false,
                        }) || operand.is_some_and(|o| self.tainted_at(o, d))
                    }
                    "string" | "tojson" | "pprint" | "join" | "format" => {
                        operand.is_some_and(|o| self.tainted_at(o, d) || self.container_at(o, d))
                    }
                    "length" | "count" | "wordcount" | "int" | "float" | "abs" | "round" | "bool" => false,
                    _ => operand.is_some_and(|o| self.tainted_at(o, d)),
                }
            }
            Expr::Call(c) => match &c.expr {
                Expr::GetAttr(g) if STRING_METHODS.contains(&g.name) => self.tainted_at(&g.expr, d),
                _ => false,
            },
            Expr::BinOp(b) => match b.op {
                BinOpKind::Add => self.tainted_at(&b.left, d) || self.tainted_at(&b.right, d),
                BinOpKind::Concat => {
                    self.tainted_at(&b.left, d)
                        || self.tainted_at(&b.right, d)
                        || self.container_at(&b.left, d)
                        || self.container_at(&b.right, d)
                }
                _ => false,
            },
            Expr::IfExpr(i) => self.tainted_at(&i.true_expr, d) || i.false_expr.as_ref().is_some_and(|f| self.tainted_at(f, d)),
            _ => false,
        }
    }

    fn field_taint(&self, name: &str, base: &Expr, depth: usize) -> bool {
        if TEXT_FIELDS.contains(&name) {
            true
        } else if STRUCT_FIELDS.contains(&name) {
            false
        } else {
            self.tainted_at(base, depth)
        }
    }

    fn is_container(&self, e: &Expr) -> bool {
        self.container_at(e, 0)
    }

    fn container_at(&self, e: &Expr, depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        match e {
            Expr::Var(v) => self.containers.contains(v.id),
            Expr::GetItem(g) if const_str(&g.subscript_expr).is_none() => self.container_at(&g.expr, depth + 1),
            Expr::Slice(s) => self.container_at(&s.expr, depth + 1),
            Expr::Filter(f) if matches!(f.name, "selectattr" | "rejectattr" | "reverse" | "list" | "first" | "last" | "sort" | "unique" | "batch") => {
                f.expr.as_ref().is_some_and(|o| self.container_at(o, depth + 1))
            }
            _ => false,
        }
    }
}

fn pos_arg<'a, 'b>(a: &'b CallArg<'a>) -> Option<&'b Expr<'a>> {
    match a {
        CallArg::Pos(e) => Some(e),
        _ => None,
    }
}

fn s_span(s: &Stmt) -> Option<Span> {
    match s {
        Stmt::Import(x) => Some(x.span()),
        Stmt::FromImport(x) => Some(x.span()),
        Stmt::Extends(x) => Some(x.span()),
        Stmt::Include(x) => Some(x.span()),
        _ => None,
    }
}

/// Names bound by an assignment target: `x`, `a, b`, `ns.x`.
fn target_names(e: &Expr) -> Vec<String> {
    match e {
        Expr::Var(v) => vec![v.id.to_string()],
        Expr::Tuple(t) => t.items.iter().flat_map(target_names).collect(),
        Expr::List(l) => l.items.iter().flat_map(target_names).collect(),
        Expr::GetAttr(g) => match &g.expr {
            Expr::Var(v) => vec![format!("{}.{}", v.id, g.name)],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Whether a string expression is built from pieces rather than written out.
fn has_concat(e: &Expr) -> bool {
    match e {
        Expr::BinOp(b) => matches!(b.op, BinOpKind::Concat | BinOpKind::Add),
        Expr::Filter(f) => matches!(f.name, "join" | "reverse" | "replace" | "lower" | "upper" | "format"),
        Expr::Call(_) | Expr::Var(_) => true,
        _ => false,
    }
}

fn collect_consts(e: &Expr, out: &mut String, depth: usize) {
    if depth > 64 || out.len() > MAX_FOLDED {
        return;
    }
    let d = depth + 1;
    match e {
        Expr::Const(c) => {
            if let Some(s) = c.value.as_str() {
                out.push_str(s);
            }
        }
        Expr::BinOp(b) => {
            collect_consts(&b.left, out, d);
            collect_consts(&b.right, out, d);
        }
        Expr::Filter(f) => {
            if let Some(x) = &f.expr {
                collect_consts(x, out, d);
            }
            for a in &f.args {
                if let Some(x) = pos_arg(a) {
                    collect_consts(x, out, d);
                }
            }
        }
        Expr::Call(c) => {
            collect_consts(&c.expr, out, d);
            for a in &c.args {
                if let Some(x) = pos_arg(a) {
                    collect_consts(x, out, d);
                }
            }
        }
        Expr::GetAttr(g) => collect_consts(&g.expr, out, d),
        Expr::List(l) => l.items.iter().for_each(|x| collect_consts(x, out, d)),
        Expr::Tuple(t) => t.items.iter().for_each(|x| collect_consts(x, out, d)),
        _ => {}
    }
}
