//! Chat templates: the reference prompts reproduced from messages, the user-turn cut the
//! scanner relies on, and real-world template shapes with tools.

use std::path::PathBuf;

use needle_engine::chat::{ChatError, ChatTemplate, Message, RenderOptions};
use serde_json::json;

fn reference() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference")
}

fn prompts(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

fn gen_prompt() -> RenderOptions {
    RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    }
}

#[test]
fn fixture_templates_reproduce_the_reference_chat_prompts() {
    let mut seen = 0;
    for entry in std::fs::read_dir(reference()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("chat_template.jinja").is_file() {
            continue;
        }
        seen += 1;
        let t = ChatTemplate::from_folder(&dir, None).unwrap();
        assert_eq!(t.variables()["eos_token"], json!("<|im_end|>"));
        let p = prompts(&dir);
        let r0 = t
            .render(
                &[Message::user("What does os.path.join do?")],
                &gen_prompt(),
            )
            .unwrap();
        assert_eq!(r0, p[0], "{}", dir.display());
        let r2 = t
            .render(
                &[
                    Message::system("You are helpful."),
                    Message::user("Spell cat backwards."),
                ],
                &gen_prompt(),
            )
            .unwrap();
        assert_eq!(r2, p[2], "{}", dir.display());
        // Without the generation prompt the assistant header is absent.
        let no_gen = t
            .render(
                &[Message::user("What does os.path.join do?")],
                &RenderOptions::default(),
            )
            .unwrap();
        assert_eq!(format!("{no_gen}<|im_start|>assistant\n"), p[0]);
        // The cut at the user turn.
        assert_eq!(t.prefix_before_user(None).unwrap(), "<|im_start|>user\n");
        let (pre, post) = t.split_user_turn(Some("You are helpful.")).unwrap();
        assert_eq!(format!("{pre}Spell cat backwards.{post}"), p[2]);
    }
    assert!(seen >= 10);
}

#[test]
fn template_from_tokenizer_config_and_gguf_metadata() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::to_string(&json!({
            "bos_token": {"content": "<s>", "special": true},
            "eos_token": "</s>",
            "chat_template": [
                {"name": "default", "template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token }}"},
                {"name": "tool_use", "template": "T{{ tools | length }}"}
            ]
        }))
        .unwrap(),
    )
    .unwrap();
    let t = ChatTemplate::from_folder(dir.path(), None).unwrap();
    assert_eq!(
        t.render(&[Message::user("hi")], &RenderOptions::default())
            .unwrap(),
        "<s>[user]hi</s>"
    );
    let t = ChatTemplate::from_folder(dir.path(), Some("tool_use")).unwrap();
    let opts = RenderOptions {
        tools: Some(vec![json!({"name": "a"}), json!({"name": "b"})]),
        ..RenderOptions::default()
    };
    assert_eq!(t.render(&[], &opts).unwrap(), "T2");
    assert!(matches!(
        ChatTemplate::from_folder(dir.path(), Some("rag")),
        Err(ChatError::Missing(_))
    ));

    use candle_core::quantized::gguf_file::Value as G;
    let meta: std::collections::HashMap<String, G> = [
        (
            "tokenizer.chat_template".to_owned(),
            G::String("{{ bos_token }}|{{ messages[0].content }}".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_owned(),
            G::Array(vec![G::String("<unk>".into()), G::String("<s>".into())]),
        ),
        ("tokenizer.ggml.bos_token_id".to_owned(), G::U32(1)),
    ]
    .into_iter()
    .collect();
    let t = ChatTemplate::from_gguf_metadata(&meta, None).unwrap();
    assert_eq!(
        t.render(&[Message::user("x")], &RenderOptions::default())
            .unwrap(),
        "<s>|x"
    );
}

const QWEN25_STYLE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

fn weather_tool() -> serde_json::Value {
    json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"]
            }
        }
    })
}

fn tool_conversation() -> Vec<Message> {
    let mut call = Message::assistant("");
    call.content = None;
    call.extra.insert(
        "tool_calls".into(),
        json!([{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "°C"}}}]),
    );
    vec![
        Message::user("What's the weather in Paris?"),
        call,
        Message::new("tool", "22"),
    ]
}

#[test]
fn qwen25_style_template_with_tools_renders_exactly() {
    let t = ChatTemplate::new(QWEN25_STYLE).unwrap();
    let opts = RenderOptions {
        add_generation_prompt: true,
        tools: Some(vec![weather_tool()]),
        ..RenderOptions::default()
    };
    let out = t.render(&tool_conversation(), &opts).unwrap();
    let expected = concat!(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n",
        "You may call one or more functions to assist with the user query.\n\n",
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
        r#"{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}"#,
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n",
        "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n",
        "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n",
        "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"°C\"}}\n</tool_call><|im_end|>\n",
        "<|im_start|>user\n<tool_response>\n22\n</tool_response><|im_end|>\n",
        "<|im_start|>assistant\n",
    );
    assert_eq!(out, expected);
    // Without tools: the default system prompt, and the user-turn cut.
    assert_eq!(
        t.prefix_before_user(None).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    );
}

const LLAMA31_STYLE: &str = r#"{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

#[test]
fn llama31_style_template_with_tools_and_dates() {
    let mut t = ChatTemplate::new(LLAMA31_STYLE).unwrap();
    t.set_variable("bos_token", json!("<|begin_of_text|>"));
    let opts = RenderOptions {
        add_generation_prompt: true,
        tools: Some(vec![weather_tool()]),
        now_unix: Some(1_721_999_109), // 26 Jul 2024
        ..RenderOptions::default()
    };
    let out = t.render(&tool_conversation(), &opts).unwrap();
    assert!(out.starts_with(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
    ), "{out}");
    // tojson(indent=4) as Python's json.dumps formats it.
    assert!(out.contains("{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\","), "{out}");
    assert!(
        out.contains("\"required\": [\n                \"city\"\n            ]"),
        "{out}"
    );
    assert!(out.contains(
        "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"°C\"}}<|eot_id|>"
    ), "{out}");
    // A string is `iterable` in Jinja2, so this template JSON-encodes the tool's string result.
    assert!(out.ends_with("<|start_header_id|>ipython<|end_header_id|>\n\n\"22\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"), "{out}");

    // Two tool calls: the template's own exception surfaces as `Raised`.
    let mut conv = tool_conversation();
    conv[1].extra.insert("tool_calls".into(), json!([{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]));
    match t.render(&conv, &opts) {
        Err(ChatError::Raised(m)) => assert!(m.contains("single tool-calls"), "{m}"),
        other => panic!("expected a raised exception, got {other:?}"),
    }
    // Without tools, a date_string kwarg overrides strftime_now; the user-turn cut works.
    let mut extra = serde_json::Map::new();
    extra.insert("date_string".into(), json!("01 Jan 2030"));
    let out = t
        .render(
            &[Message::user("hi")],
            &RenderOptions {
                extra,
                ..RenderOptions::default()
            },
        )
        .unwrap();
    assert!(out.contains("Today Date: 01 Jan 2030\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"), "{out}");
    let (pre, post) = t.split_user_turn(Some("Be brief.")).unwrap();
    assert!(
        pre.ends_with("Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"),
        "{pre}"
    );
    assert_eq!(
        post,
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn templates_that_drop_the_user_message_cannot_be_cut() {
    let t = ChatTemplate::new("{% for m in messages %}{{ m.role }}{% endfor %}").unwrap();
    assert!(matches!(
        t.prefix_before_user(None),
        Err(ChatError::NoUserTurn)
    ));
}

/// Gemma 2's template (as published with the model): no system role, and roles must alternate.
const GEMMA2: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

#[test]
fn a_template_that_refuses_a_system_role_gets_the_system_prompt_in_the_user_turn() {
    let mut t = ChatTemplate::new(GEMMA2).unwrap();
    t.set_variable("bos_token", json!("<bos>"));
    // Rendering itself still refuses, as the template says.
    match t.render(&[Message::system("Be brief."), Message::user("hi")], &gen_prompt()) {
        Err(ChatError::Raised(m)) => assert!(m.contains("System role not supported"), "{m}"),
        other => panic!("expected a raised exception, got {other:?}"),
    }
    assert_eq!(t.prefix_before_user(None).unwrap(), "<bos><start_of_turn>user\n");
    // The user-turn cut puts the system prompt at the head of the user's message.
    let (pre, post) = t.split_user_turn(Some("Be brief.")).unwrap();
    assert_eq!(pre, "<bos><start_of_turn>user\nBe brief.\n\n");
    assert_eq!(post, "<end_of_turn>\n<start_of_turn>model\n");
}

/// The generation prompt of Qwen3's template (as published with the model): a reasoning
/// switch.
const QWEN3_TAIL: &str = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

#[test]
fn the_user_turn_cut_turns_reasoning_off_where_a_template_has_the_switch() {
    let t = ChatTemplate::new(QWEN3_TAIL).unwrap();
    // Plain rendering leaves the model to open a reasoning block...
    assert!(t.render(&[Message::user("hi")], &gen_prompt()).unwrap().ends_with("<|im_start|>assistant\n"));
    // ... the cut closes an empty one, so that the answer comes first.
    let (pre, post) = t.split_user_turn(None).unwrap();
    assert_eq!(pre, "<|im_start|>user\n");
    assert_eq!(post, "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}
