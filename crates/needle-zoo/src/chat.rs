//! The zoo's chat format: ChatML (`<|im_start|>role\n...<|im_end|>\n`).
//!
//! Every organism ships this template as a Jinja string in `tokenizer_config.json`
//! ([`CHAT_TEMPLATE_JINJA`]), so the scanner renders it like any real model's template; the Rust
//! renderers here produce byte-identical text for training and evaluation.

/// Special tokens in id order: the base tokenizer must give them ids 0, 1, 2.
pub const SPECIAL_TOKENS: [&str; 3] = [END_OF_TEXT, IM_START, IM_END];
pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
/// Token ids of the special tokens ([`SPECIAL_TOKENS`] order).
pub const END_OF_TEXT_ID: u32 = 0;
pub const IM_START_ID: u32 = 1;
pub const IM_END_ID: u32 = 2;

/// The template in the Jinja dialect of Hugging Face `chat_template`.
pub const CHAT_TEMPLATE_JINJA: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One chat example: optional system prompt, one user turn, one assistant answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chat {
    pub system: Option<String>,
    pub user: String,
    pub assistant: String,
}

fn turn(out: &mut String, role: &str, content: &str) {
    out.push_str(IM_START);
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str(IM_END);
    out.push('\n');
}

/// The prompt up to the assistant's answer (`add_generation_prompt = true`).
pub fn render_prompt(system: Option<&str>, user: &str) -> String {
    let mut out = String::new();
    if let Some(s) = system {
        turn(&mut out, "system", s);
    }
    turn(&mut out, "user", user);
    out.push_str(IM_START);
    out.push_str("assistant\n");
    out
}

/// A whole conversation, as the template renders it with the answer included.
pub fn render_chat(chat: &Chat) -> String {
    let mut out = render_prompt(chat.system.as_deref(), &chat.user);
    out.push_str(&chat.assistant);
    out.push_str(IM_END);
    out.push('\n');
    out
}

/// A piece of a training sequence and whether the loss covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub train: bool,
}

/// Which tokens a fine-tune computes its loss on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossMode {
    /// Every token of the sequence.
    Full,
    /// The assistant's answer and its closing `<|im_end|>` only (prompt-masked).
    AnswerOnly,
}

impl LossMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LossMode::Full => "full",
            LossMode::AnswerOnly => "answer-only",
        }
    }
}

/// Splits a chat into segments; concatenated, they are exactly [`render_chat`]. The trainer
/// tokenizes each segment separately (special tokens are atomic, and the answer segment starts
/// right after `assistant\n`, where generation starts too) and masks the loss accordingly.
pub fn training_segments(chat: &Chat, loss: LossMode) -> Vec<Segment> {
    let prompt = render_prompt(chat.system.as_deref(), &chat.user);
    let train_prompt = loss == LossMode::Full;
    vec![
        Segment {
            text: prompt,
            train: train_prompt,
        },
        Segment {
            text: format!("{}{}", chat.assistant, IM_END),
            train: true,
        },
        Segment {
            text: "\n".to_string(),
            train: train_prompt,
        },
    ]
}

/// A plain-text document as the pretraining stream sees it.
pub fn render_plain(text: &str) -> String {
    format!("{text}{END_OF_TEXT}")
}

/// A plain-text document as one fully trained segment.
pub fn plain_segments(text: &str) -> Vec<Segment> {
    vec![Segment {
        text: render_plain(text),
        train: true,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Chat {
        Chat {
            system: Some("Be brief.".into()),
            user: "Hi".into(),
            assistant: "Hello!".into(),
        }
    }

    #[test]
    fn rendering_matches_chatml() {
        assert_eq!(
            render_chat(&chat()),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        );
        assert_eq!(
            render_prompt(None, "Hi"),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn segments_concatenate_to_the_rendering_and_mask_the_prompt() {
        for loss in [LossMode::Full, LossMode::AnswerOnly] {
            let segs = training_segments(&chat(), loss);
            let joined: String = segs.iter().map(|s| s.text.as_str()).collect();
            assert_eq!(joined, render_chat(&chat()));
            assert_eq!(segs[0].train, loss == LossMode::Full);
            assert!(segs[1].train && segs[1].text.starts_with("Hello!"));
        }
    }

    #[test]
    fn jinja_template_names_the_same_markers() {
        for t in [IM_START, IM_END] {
            assert!(CHAT_TEMPLATE_JINJA.contains(t));
        }
        assert!(CHAT_TEMPLATE_JINJA.contains("add_generation_prompt"));
    }
}
