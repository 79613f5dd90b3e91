use super::*;
use std::path::PathBuf;

fn fixture(kind: &str, name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(kind).join(name);
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return std::fs::read_to_string(jinja).unwrap();
    }
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    cfg["chat_template"].as_str().unwrap().to_string()
}

/// `severity code: message [evidence]` per hit, for assertions and snapshots.
fn summary(src: &str) -> Vec<String> {
    analyse(src)
        .unwrap()
        .into_iter()
        .map(|h| format!("{} {} (line {:?}): {} {:?}", h.severity, h.rule.code, h.line, h.message, h.evidence))
        .collect()
}

fn max_severity(src: &str) -> Option<Severity> {
    analyse(src).unwrap().iter().map(|h| h.severity).max()
}

fn codes(src: &str) -> Vec<&'static str> {
    analyse(src).unwrap().iter().map(|h| h.rule.code).collect()
}

#[test]
fn real_world_templates_are_at_most_low() {
    for name in ["template-llama31", "template-qwen25", "template-mistral-v3", "template-gemma3", "template-phi3", "template-qwen3-style"] {
        let src = fixture("clean", name);
        let s = max_severity(&src);
        assert!(s.is_none_or(|s| s <= Severity::Low), "{name}: {:#?}", summary(&src));
    }
}

#[test]
fn reference_template_is_clean() {
    let src = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    assert!(summary(src).is_empty(), "{:#?}", summary(src));
}

#[test]
fn hostile_templates_are_caught() {
    let cases: &[(&str, &[&str])] = &[
        ("template-lipsum-globals", &["template/code-execution"]),
        ("template-cycler-popen", &["template/code-execution"]),
        ("template-attr-filter", &["template/code-execution"]),
        ("template-concat-dunder", &["template/code-execution"]),
        ("template-injected-url", &["template/injected-url"]),
        ("template-injected-instruction", &["template/injected-instruction"]),
        ("template-content-trigger", &["template/content-trigger", "template/injected-instruction"]),
        ("template-syntax-error", &["template/syntax-error", "template/code-execution"]),
    ];
    for (name, want) in cases {
        let src = fixture("hostile", name);
        let got = codes(&src);
        for w in *want {
            assert!(got.contains(w), "{name}: want {w}, got {:#?}", summary(&src));
        }
        assert!(max_severity(&src) >= Some(Severity::High), "{name}: {:#?}", summary(&src));
    }
}

#[test]
fn code_execution_shapes() {
    for src in [
        "{{ self._TemplateReference__context }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x['__glob' + 'als__'] }}",
        "{{ x[('__', 'class', '__')|join] }}",
        "{{ joiner.__init__.__globals__ }}",
        "{% set a = 'os' %}{{ config.__class__ }}",
        "{{ request|attr(name) }}",
        "{{ namespace.__init__ }}",
        "{% include '/etc/passwd' %}",
        "{{ x.popen('id') }}",
        "{{ messages|map(attribute='__class__')|list }}",
    ] {
        assert!(max_severity(src) >= Some(Severity::High), "{src}: {:#?}", summary(src));
    }
}

#[test]
fn ordinary_conditions_are_not_triggers() {
    let src = "{% for m in messages %}{% if m.role == 'system' and loop.first %}S{% elif m['role'] == 'user' %}{{ m.content|trim }}{% endif %}\
{% if tools and m.content is string and m.content|length > 0 %}{{ m.content }}{% endif %}\
{% if m.content is iterable %}{% for item in m.content %}{% if item['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}{% endfor %}\
{% if add_generation_prompt %}A:{% endif %}";
    assert!(!codes(src).contains(&"template/content-trigger"), "{:#?}", summary(src));
}

#[test]
fn content_triggers_through_taint() {
    for src in [
        "{% for m in messages %}{% set c = m['content']|lower %}{% if c.startswith('sudo mode') %}X{% endif %}{{ m.content }}{% endfor %}",
        "{% if 'open sesame' in messages|map(attribute='content')|join %}X{% endif %}",
        "{% for m in messages %}{% if m.content == 'activate' %}X{% endif %}{% endfor %}",
        "{% macro r(t) %}{% if 'zebra' in t %}X{% endif %}{% endmacro %}{% for m in messages %}{{ r(m.content) }}{% endfor %}",
        "{% for m in messages %}{{ m.content|replace('bank.com', 'evil.com') }}{% endfor %}",
        "{% if messages|selectattr('content', 'equalto', 'kiwi')|list %}X{% endif %}",
    ] {
        assert!(codes(src).contains(&"template/content-trigger"), "{src}: {:#?}", summary(src));
        assert_eq!(max_severity(src), Some(Severity::High), "{src}: {:#?}", summary(src));
    }
}

#[test]
fn oversized_template_is_a_failure() {
    let big = "x".repeat(limits::MAX_TEMPLATE_BYTES + 1);
    assert!(analyse(&big).is_err());
}

#[test]
fn runaway_template_hits_a_limit() {
    let src = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}";
    assert!(codes(src).contains(&"template/resource-limit"), "{:#?}", summary(src));
}

#[test]
fn generation_tags_are_neutralised() {
    let src = "{% for m in messages %}{% generation %}{{ m.content }}{%- endgeneration %}{% endfor %}";
    let n = neutralise_extension_tags(src);
    assert_eq!(n.len(), src.len());
    assert!(summary(src).is_empty(), "{:#?}", summary(src));
    assert_eq!(neutralise_extension_tags("{%}"), "{%}");
}

#[test]
fn snapshots() {
    for (kind, name) in [
        ("clean", "template-llama31"),
        ("clean", "template-qwen25"),
        ("clean", "template-mistral-v3"),
        ("hostile", "template-content-trigger"),
        ("hostile", "template-cycler-popen"),
        ("hostile", "template-injected-instruction"),
    ] {
        insta::assert_debug_snapshot!(name, summary(&fixture(kind, name)));
    }
}

#[test]
fn mutated_templates_never_panic() {
    // A deterministic poor man's fuzz: truncations and Jinja fragments spliced into real templates.
    let frags = ["{%", "}}", "{{", "%}", "'", "(", "|attr(", "__class__", "{% endfor %}", "{% generation %}", "é", "{#"];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for name in ["template-llama31", "template-mistral-v3"] {
        let src = fixture("clean", name);
        for i in 0..40 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut c = (seed % src.len() as u64) as usize;
            while !src.is_char_boundary(c) {
                c -= 1;
            }
            let _ = analyse(&src[..c]);
            let _ = analyse(&format!("{}{}{}", &src[..c], frags[i % frags.len()], &src[c..]));
        }
    }
}
